//===- HFTokenizerTest.cpp - tokenizer.json BPE ---------------------------===//

#include "kvprec/Calibration/HFTokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include "gtest/gtest.h"

#include <cstdlib>

using namespace kvprec::calib;
using namespace llvm;

namespace {
/// A SentencePiece-style tokenizer.json: vocabulary `vocab` (ids in order),
/// merges, and the Llama 2 normalizer and decoder.
std::string makeJSON(const std::vector<std::string> &vocab,
                     const std::vector<std::string> &merges,
                     StringRef extraModel = "", StringRef added = "[]",
                     StringRef normalizer = R"({"type": "Sequence",
      "normalizers": [{"type": "Prepend", "prepend": "▁"},
                      {"type": "Replace", "pattern": {"String": " "},
                       "content": "▁"}]})") {
  std::string v, m;
  for (size_t i = 0; i < vocab.size(); ++i)
    v += (i ? ", " : "") + ("\"" + vocab[i] + "\": " + std::to_string(i));
  for (size_t i = 0; i < merges.size(); ++i)
    m += (i ? ", " : "") + ("\"" + merges[i] + "\"");
  return R"({"version": "1.0", "added_tokens": )" + added.str() +
         R"(, "normalizer": )" + normalizer.str() +
         R"(, "pre_tokenizer": null,
    "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
      "continuing_subword_prefix": null, "end_of_word_suffix": null,
      "fuse_unk": true, "byte_fallback": true, "ignore_merges": false)" +
         extraModel.str() + R"(, "vocab": {)" + v + R"(}, "merges": [)" + m +
         "]}}";
}

std::vector<std::string> baseVocab() {
  return {"<unk>", "<s>", "</s>", "▁",  "a",      "b",     "c",
          "ab",    "bc",  "abc",  "▁a", "<0xC3>", "<0xA9>"};
}

HFTokenizer build(const std::string &json, int32_t vocab = 13) {
  Expected<HFTokenizer> t =
      HFTokenizer::fromJSON(json, "test.json", vocab, 1, 2);
  EXPECT_TRUE(bool(t)) << (t ? "" : toString(t.takeError()));
  return std::move(*t);
}

std::vector<int> encode(const HFTokenizer &t, StringRef text) {
  Expected<std::vector<int>> ids = t.encode(text, false, false);
  EXPECT_TRUE(bool(ids)) << (ids ? "" : toString(ids.takeError()));
  return ids ? *ids : std::vector<int>();
}

std::string errorOf(StringRef json, int32_t vocab = 13) {
  Expected<HFTokenizer> t =
      HFTokenizer::fromJSON(json, "test.json", vocab, 1, 2);
  if (t)
    return "";
  return toString(t.takeError());
}
} // namespace

// Merges apply lowest rank first, wherever they are: "b c" (rank 0) before
// "a b" (rank 1), so "abc" is a + bc, then "a bc" (rank 2).
TEST(HFTokenizerTest, MergesByRank) {
  HFTokenizer t = build(makeJSON(baseVocab(), {"b c", "a b", "a bc", "▁ a"}));
  // "▁abc": ▁ a b c -> (b c, rank 0) ▁ a bc -> (a bc, rank 2) ▁ abc.
  EXPECT_EQ(encode(t, "abc"), (std::vector<int>{3, 9}));
  // "▁ab": (a b) has rank 1, (▁ a) rank 3, so a b merge first.
  EXPECT_EQ(encode(t, "ab"), (std::vector<int>{3, 7}));
  EXPECT_EQ(encode(t, ""), std::vector<int>());
  // With BOS and EOS.
  Expected<std::vector<int>> ids = t.encode("a", true, true);
  ASSERT_TRUE(bool(ids));
  EXPECT_EQ(*ids, (std::vector<int>{1, 10, 2}));
}

// Characters outside the vocabulary: their <0xNN> tokens where all exist,
// else one unk per run of them (fuse_unk).
TEST(HFTokenizerTest, ByteFallbackAndFusedUnk) {
  HFTokenizer t = build(makeJSON(baseVocab(), {}));
  EXPECT_EQ(encode(t, "é"), (std::vector<int>{3, 11, 12}));
  EXPECT_EQ(encode(t, "xyz"), (std::vector<int>{3, 0}));
  EXPECT_EQ(encode(t, "axyé"), (std::vector<int>{3, 4, 0, 11, 12}));
  // The decoder turns byte tokens back into UTF-8, strips the prepended
  // space, and skips special tokens; stray bytes become U+FFFD.
  EXPECT_EQ(t.decode({1, 3, 4, 11, 12, 2}), "aé");
  EXPECT_EQ(t.decode({3, 4, 11}), "a\xEF\xBF\xBD");
  EXPECT_EQ(t.decodePiece(1, 10), "a");
  EXPECT_EQ(t.decodePiece(4, 10), " a");
  EXPECT_EQ(t.decodePiece(4, 11), "\xC3");
  // Invalid UTF-8 in the text is an error, not garbage.
  Expected<std::vector<int>> bad = t.encode("a\xC3", false, false);
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(toString(bad.takeError()).find("not valid UTF-8"),
            std::string::npos);
}

// Added tokens split the text; normalized ones are matched in their
// normalized form (so "▁<s>" only), as the Rust library does.
TEST(HFTokenizerTest, AddedTokens) {
  std::string added =
      R"([{"id": 1, "content": "<s>", "normalized": true, "special": true},
          {"id": 2, "content": "</s>", "normalized": false, "special": true}])";
  HFTokenizer t = build(makeJSON(baseVocab(), {"▁ a"}, "", added));
  EXPECT_EQ(encode(t, "<s>a"), (std::vector<int>{1, 4}));
  EXPECT_EQ(encode(t, "a</s>a"), (std::vector<int>{10, 2, 10}));
  // "<s>" after text is not "▁<s>": it is ordinary text there (unk).
  std::vector<int> inside = encode(t, "a<s>");
  EXPECT_EQ(inside.front(), 10);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 1), 0);
}

// A long text encodes in O(n log n): 200,000 characters with merges that
// cascade would take hours with a quadratic merge loop.
TEST(HFTokenizerTest, LongTextsEncode) {
  std::vector<std::string> vocab = baseVocab();
  std::vector<std::string> merges = {"a b", "ab c", "▁ a"};
  std::string text;
  for (int i = 0; i < 200000 / 3; ++i)
    text += "abc";
  HFTokenizer t = build(makeJSON(vocab, merges));
  std::vector<int> ids = encode(t, text);
  ASSERT_EQ(ids.size(), 1 + 200000 / 3);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(ids[1], 9);
}

TEST(HFTokenizerTest, UnsupportedOrInconsistentFilesAreErrors) {
  EXPECT_NE(errorOf("[1, 2]").find("is not a JSON object"), std::string::npos);
  EXPECT_NE(errorOf("{").find("is not JSON"), std::string::npos);
  std::string wordPiece = makeJSON(baseVocab(), {});
  wordPiece.replace(wordPiece.find("\"BPE\""), 5, "\"WordPiece\"");
  EXPECT_NE(errorOf(wordPiece).find("\"model.type\" is \"WordPiece\""),
            std::string::npos);
  EXPECT_NE(errorOf(makeJSON(baseVocab(), {}, "", "[]", R"({"type": "NFKC"})"))
                .find("\"normalizer.type\" is \"NFKC\""),
            std::string::npos);
  EXPECT_NE(
      errorOf(makeJSON(baseVocab(), {"a q"})).find("not in the vocabulary"),
      std::string::npos);
  EXPECT_NE(errorOf(makeJSON(baseVocab(), {"abc"})).find("two pieces"),
            std::string::npos);
  // Ids beyond the model's vocabulary.
  EXPECT_NE(errorOf(makeJSON(baseVocab(), {}), 5)
                .find("outside the model's "
                      "vocabulary of 5"),
            std::string::npos);
  std::string regex =
      makeJSON(baseVocab(), {}, "", "[]",
               R"({"type": "Replace", "pattern": {"Regex": " +"},
                                   "content": "▁"})");
  EXPECT_NE(errorOf(regex).find("regex patterns are not supported"),
            std::string::npos);
  std::string dropout = makeJSON(baseVocab(), {});
  dropout.replace(dropout.find("\"dropout\": null"), 15, "\"dropout\": 0.1");
  EXPECT_NE(errorOf(dropout).find("\"model.dropout\""), std::string::npos);
}

// tinystories-656K's tokenizer: decode inverts encode on ordinary text.
TEST(HFTokenizerTest, TinyStoriesRoundTrip) {
  const char *models = std::getenv("KVPREC_MODELS_DIR");
  SmallString<128> path(models ? models : "");
  sys::path::append(path, "tinystories-656K", "tokenizer.json");
  if (!models || !sys::fs::exists(path))
    GTEST_SKIP() << "KVPREC_MODELS_DIR/tinystories-656K not available";
  Expected<HFTokenizer> t = HFTokenizer::load(path, 2048, 1, 2);
  ASSERT_TRUE(bool(t)) << toString(t.takeError());
  for (StringRef text : {"Once upon a time, there was a little girl.",
                         "Tom said: \"Let's go to the park!\"", "a b  c"}) {
    Expected<std::vector<int>> ids = t->encode(text, true, false);
    ASSERT_TRUE(bool(ids));
    EXPECT_EQ(t->decode(*ids), text.str());
    std::string streamed;
    for (size_t i = 1; i < ids->size(); ++i)
      streamed += t->decodePiece((*ids)[i - 1], (*ids)[i]);
    EXPECT_EQ(streamed, text.str());
  }
}
