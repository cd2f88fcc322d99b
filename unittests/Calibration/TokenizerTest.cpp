//===- TokenizerTest.cpp - llama2.c tokenizer -----------------------------===//

#include "kvprec/Calibration/Tokenizer.h"

#include "TestUtils.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <cmath>

using namespace llvm;
using namespace kvprec::calib;
using namespace kvprec::calib::test;

namespace {

/// The llama2.c layout: specials, 256 byte pieces, then merges and chars.
struct PieceTable {
  std::vector<std::string> pieces;
  std::vector<float> scores;

  void add(StringRef piece, float score) {
    pieces.push_back(piece.str());
    scores.push_back(score);
  }
};

PieceTable makeSmallVocabulary() {
  PieceTable table;
  table.add("<unk>", 0);
  table.add("\n<s>\n", 0);
  table.add("\n</s>\n", 0);
  for (unsigned byte = 0; byte < 256; ++byte) {
    std::string piece;
    raw_string_ostream(piece) << format("<0x%02X>", byte);
    table.add(piece, 0);
  }
  table.add(" ab", -0.5f);       // 259
  table.add("ab", -1.0f);        // 260
  table.add(" a", -2.0f);        // 261
  table.add(" ", -10.0f);        // 262
  table.add("a", -11.0f);        // 263
  table.add("b", -12.0f);        // 264
  table.add("\xc3\xa9", -13.0f); // 265: e acute
  return table;
}

std::string serialize(const PieceTable &table, int32_t maxTokenLength) {
  std::string bytes;
  char buffer[4];
  support::endian::write32le(buffer, maxTokenLength);
  bytes.append(buffer, 4);
  for (size_t i = 0; i < table.pieces.size(); ++i) {
    support::endian::write32le(buffer, bit_cast<uint32_t>(table.scores[i]));
    bytes.append(buffer, 4);
    support::endian::write32le(buffer, table.pieces[i].size());
    bytes.append(buffer, 4);
    bytes += table.pieces[i];
  }
  return bytes;
}

std::vector<int> encodeOrFail(const Tokenizer &tokenizer, StringRef text,
                              bool bos = true, bool eos = false) {
  Expected<std::vector<int>> tokens = tokenizer.encode(text, bos, eos);
  EXPECT_TRUE(bool(tokens)) << errorMessage(tokens);
  return tokens ? *tokens : std::vector<int>();
}

TEST(TokenizerTest, MergesByBestScore) {
  PieceTable table = makeSmallVocabulary();
  Expected<Tokenizer> tokenizer =
      Tokenizer::fromPieces(table.pieces, table.scores);
  ASSERT_TRUE(bool(tokenizer)) << errorMessage(tokenizer);

  // [" ", "a", "b"]: "ab" (-1) beats " a" (-2), then " " + "ab" = " ab".
  EXPECT_EQ(encodeOrFail(*tokenizer, "ab"), (std::vector<int>{1, 259}));
  // No pair of " ", "b", "a" is a piece.
  EXPECT_EQ(encodeOrFail(*tokenizer, "ba"),
            (std::vector<int>{1, 262, 264, 263}));
  // Without BOS, with EOS; empty text has no dummy prefix.
  EXPECT_EQ(encodeOrFail(*tokenizer, "a", false, true),
            (std::vector<int>{261, 2}));
  EXPECT_EQ(encodeOrFail(*tokenizer, "", true, false), (std::vector<int>{1}));
  // A multi-byte character in the vocabulary is one token; one that is not
  // falls back to its bytes (<0xNN> is token 3 + NN here).
  EXPECT_EQ(encodeOrFail(*tokenizer, "\xc3\xa9"),
            (std::vector<int>{1, 262, 265}));
  EXPECT_EQ(encodeOrFail(*tokenizer, "\xc3\xbc"),
            (std::vector<int>{1, 262, 3 + 0xc3, 3 + 0xbc}));
}

TEST(TokenizerTest, DecodeInvertsEncode) {
  PieceTable table = makeSmallVocabulary();
  Expected<Tokenizer> tokenizer =
      Tokenizer::fromPieces(table.pieces, table.scores);
  ASSERT_TRUE(bool(tokenizer));
  for (StringRef text :
       {"ab", "ba ab", "a\nb", "\xc3\xa9\xc3\xbc!", "  x", "tab\there"}) {
    std::vector<int> tokens = encodeOrFail(*tokenizer, text);
    EXPECT_EQ(tokenizer->decode(tokens), text.str()) << text.str();
  }
  // Leading space dropped only right after BOS; byte pieces become bytes.
  EXPECT_EQ(tokenizer->decodePiece(1, 259), "ab");
  EXPECT_EQ(tokenizer->decodePiece(260, 259), " ab");
  EXPECT_EQ(tokenizer->decodePiece(260, 3 + '\n'), "\n");
  EXPECT_TRUE(Tokenizer::isPrintable("a"));
  EXPECT_TRUE(Tokenizer::isPrintable("\n"));
  EXPECT_FALSE(Tokenizer::isPrintable(StringRef("\x01", 1)));
  EXPECT_TRUE(Tokenizer::isPrintable("\xc3\xa9"));
}

TEST(TokenizerTest, MissingByteFallbackIsAnError) {
  Expected<Tokenizer> tokenizer = Tokenizer::fromPieces(
      {"<unk>", "\n<s>\n", "\n</s>\n", " ", "a"}, {0, 0, 0, -1, -2});
  ASSERT_TRUE(bool(tokenizer));
  EXPECT_EQ(encodeOrFail(*tokenizer, "aa"), (std::vector<int>{1, 3, 4, 4}));
  Expected<std::vector<int>> tokens = tokenizer->encode("ab", true, false);
  EXPECT_NE(errorMessage(tokens).find("cannot encode byte <0x62>"),
            std::string::npos);
}

TEST(TokenizerTest, LoadsAndRejectsFiles) {
  TempDir dir;
  PieceTable table = makeSmallVocabulary();
  int32_t vocab = table.pieces.size();
  std::string bytes = serialize(table, 6);
  std::string path = dir.path("tok.bin");
  writeFile(path, bytes);
  Expected<Tokenizer> tokenizer = Tokenizer::load(path, vocab);
  ASSERT_TRUE(bool(tokenizer)) << errorMessage(tokenizer);
  EXPECT_EQ(tokenizer->getVocabSize(), vocab);
  EXPECT_EQ(tokenizer->getMaxTokenLength(), 6);
  EXPECT_EQ(tokenizer->getPiece(259), " ab");
  EXPECT_EQ(tokenizer->getScore(260), -1.0f);
  EXPECT_EQ(tokenizer->lookup("<0x41>"), 3 + 0x41);

  auto loadError = [&](StringRef content, int32_t vocabSize) {
    writeFile(path, content);
    Expected<Tokenizer> loaded = Tokenizer::load(path, vocabSize);
    return errorMessage(loaded);
  };
  std::string message = loadError(StringRef(bytes).drop_back(2), vocab);
  EXPECT_NE(message.find("tok.bin: tokenizer is truncated: token 265 of 266 "
                         "needs 2 bytes"),
            std::string::npos)
      << message;
  message = loadError(StringRef(bytes).take_front(100), vocab);
  EXPECT_NE(message.find("tokenizer is truncated: token"), std::string::npos)
      << message;
  message = loadError("ab", vocab);
  EXPECT_NE(message.find("too short for its max_token_length"),
            std::string::npos)
      << message;
  message = loadError(bytes, vocab - 1);
  EXPECT_NE(message.find("bytes after its 265 tokens"), std::string::npos)
      << message;
  std::string negative = bytes;
  support::endian::write32le(&negative[4 + 4], static_cast<uint32_t>(-3));
  message = loadError(negative, vocab);
  EXPECT_NE(message.find("token 0 has negative length -3"), std::string::npos)
      << message;
  std::string nanScore = bytes;
  support::endian::write32le(&nanScore[4], 0x7fc00000u);
  message = loadError(nanScore, vocab);
  EXPECT_NE(message.find("token 0 has score nan at offset 4; scores must be "
                         "finite"),
            std::string::npos)
      << message;
  // " ab" is 3 bytes and "<unk>" 5: a header claiming 4 is wrong.
  message = loadError(serialize(table, 4), vocab);
  EXPECT_NE(message.find("token 0 is 5 bytes, longer than the header's "
                         "max_token_length 4"),
            std::string::npos)
      << message;
  message =
      errorMessage(Tokenizer::load(dir.path("missing.bin"), vocab).takeError());
  EXPECT_NE(message.find("missing.bin: cannot open tokenizer"),
            std::string::npos)
      << message;
}

TEST(TokenizerTest, Stories260KTokenizer) {
  std::optional<std::string> models = getStories260KDir();
  if (!models)
    GTEST_SKIP() << "KVPREC_MODELS_DIR/stories260K not available";
  Expected<Tokenizer> tokenizer = Tokenizer::load(*models + "/tok512.bin", 512);
  ASSERT_TRUE(bool(tokenizer)) << errorMessage(tokenizer);
  // The first tokens of greedy_ref_ids.txt: BOS " Once" " upon" " a" " time".
  EXPECT_EQ(encodeOrFail(*tokenizer, "Once upon a time"),
            (std::vector<int>{1, 403, 407, 261, 378}));
  for (StringRef text :
       {"Once upon a time, there was a little girl named Lily.",
        "She said, \"I'm sorry.\"\nThe end.",
        "caf\xc3\xa9 \xe2\x80\x9cquoted\xe2\x80\x9d",
        "emoji \xf0\x9f\x99\x82 and \xc3\xbc", "  two  spaces", "x"}) {
    std::vector<int> tokens = encodeOrFail(*tokenizer, text);
    EXPECT_EQ(tokenizer->decode(tokens), text.str()) << text.str();
  }
}

/// llama2.c's quadratic merge loop, kept here as the reference for the
/// heap-based one.
std::vector<int> referenceMerge(const Tokenizer &tokenizer,
                                std::vector<int> tokens) {
  while (tokens.size() > 1) {
    float bestScore = -1e10f;
    int bestToken = -1;
    size_t bestIndex = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      int token = tokenizer.lookup(tokenizer.getPiece(tokens[i]).str() +
                                   tokenizer.getPiece(tokens[i + 1]).str());
      if (token >= 0 && tokenizer.getScore(token) > bestScore) {
        bestScore = tokenizer.getScore(token);
        bestToken = token;
        bestIndex = i;
      }
    }
    if (bestToken < 0)
      break;
    tokens[bestIndex] = bestToken;
    tokens.erase(tokens.begin() + bestIndex + 1);
  }
  return tokens;
}

TEST(TokenizerTest, HeapMergeMatchesQuadraticMerge) {
  // Ties are frequent here (equal scores), which is where leftmost-first
  // matters.
  Expected<Tokenizer> tokenizer = Tokenizer::fromPieces(
      {"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", "aa", "ab", "ba",
       "bb", "aaa", "aba", "bab", " a", " b", "aab", "abab"},
      {0, 0, 0, -1, -1, -1, -2, -2, -2, -3, -2, -4, -4, -1, -2, -2, -1});
  ASSERT_TRUE(bool(tokenizer)) << errorMessage(tokenizer);
  uint64_t state = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    size_t length = 1 + (state >> 33) % 40;
    for (size_t i = 0; i < length; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      text += " ab"[(state >> 33) % 3];
    }
    std::vector<int> symbols;
    symbols.push_back(tokenizer->lookup(" "));
    for (char c : text)
      symbols.push_back(tokenizer->lookup(std::string(1, c)));
    std::vector<int> expected = referenceMerge(*tokenizer, symbols);
    expected.insert(expected.begin(), Tokenizer::kBOSToken);
    EXPECT_EQ(encodeOrFail(*tokenizer, text), expected) << text;
  }
}

TEST(TokenizerTest, LongTextIsRefusedBeforeMerging) {
  Expected<Tokenizer> tokenizer = Tokenizer::fromPieces(
      {"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "aa", "aaaa"},
      {0, 0, 0, -1, -1, -2, -3});
  ASSERT_TRUE(bool(tokenizer)) << errorMessage(tokenizer);
  // 40 bytes plus the dummy prefix in pieces of at most 6 bytes ("\n</s>\n"):
  // at least 7 tokens, plus BOS.
  std::string text(40, 'a');
  Expected<std::vector<int>> refused = tokenizer->encode(text, true, false, 7);
  std::string message = errorMessage(refused);
  EXPECT_NE(message.find("text of 40 bytes needs at least 8 tokens (no piece "
                         "is longer than 6 bytes), more than the limit of 7"),
            std::string::npos)
      << message;
  // A long text still encodes quickly: 1 MB of one letter.
  std::string huge(1 << 20, 'a');
  Expected<std::vector<int>> tokens = tokenizer->encode(huge, true, false);
  ASSERT_TRUE(bool(tokens)) << errorMessage(tokens);
  EXPECT_EQ(tokens->size(), 2u + (1u << 20) / 4);
  Expected<Tokenizer> nanScore = Tokenizer::fromPieces({"a"}, {NAN});
  EXPECT_NE(errorMessage(nanScore).find("piece 0 has score nan"),
            std::string::npos);
}

} // namespace

TEST(TokenizerTest, VocabularyMustHoldTheReservedIds) {
  // Found by the tokenizer fuzzer: a 1-token vocabulary loaded, and encode
  // then returned BOS (1) and EOS (2), ids outside the vocabulary.
  std::string bytes("\x01\x00\x00\x00", 4);
  for (int i = 0; i < 2; ++i)
    bytes += std::string("\x00\x00\x00\x00\x01\x00\x00\x00", 8) + "a";
  Expected<Tokenizer> small = Tokenizer::fromBytes(bytes, "tiny.bin", 2);
  ASSERT_FALSE(bool(small));
  EXPECT_NE(errorMessage(small).find("vocabulary size must be at least 3"),
            std::string::npos)
      << errorMessage(small);
  Expected<Tokenizer> pieces = Tokenizer::fromPieces({"<unk>", "<s>"}, {0, 0});
  ASSERT_FALSE(bool(pieces));
  EXPECT_NE(errorMessage(pieces).find("needs at least 3"), std::string::npos)
      << errorMessage(pieces);
}
