//===- HFTokenizer.cpp - Hugging Face tokenizer.json BPE ------------------===//

#include "kvprec/Calibration/HFTokenizer.h"
#include "kvprec/Calibration/InputFile.h"

#include "llvm/Support/ConvertUTF.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <queue>

using namespace llvm;
using namespace kvprec::calib;

static Error makeError(StringRef context, const Twine &message) {
  return createStringError(inconvertibleErrorCode(),
                           context + ": " + message.str());
}

/// `text` with every occurrence of `from` (not empty) replaced by `to`.
static std::string replaceAll(StringRef text, StringRef from, StringRef to) {
  std::string result;
  for (size_t at; (at = text.find(from)) != StringRef::npos;) {
    result += text.substr(0, at).str();
    result += to.str();
    text = text.substr(at + from.size());
  }
  return result + text.str();
}

/// "<0xAB>" for byte 0xAB.
static std::string byteTokenName(unsigned byte) {
  return formatv("<0x{0:X-2}>", byte).str();
}

/// The bytes of the first UTF-8 character of `text` (0 when invalid).
static size_t characterLength(StringRef text) {
  unsigned length = getNumBytesForUTF8(text[0]);
  if (length == 0 || length > text.size())
    return 0;
  const UTF8 *begin = reinterpret_cast<const UTF8 *>(text.data());
  if (!isLegalUTF8Sequence(begin, begin + length))
    return 0;
  return length;
}

Expected<HFTokenizer> HFTokenizer::load(StringRef path, int32_t vocabSize,
                                        int bos, int eos) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, "tokenizer", uint64_t(256) << 20, /*isText=*/true);
  if (!buffer)
    return buffer.takeError();
  return fromJSON((*buffer)->getBuffer(), path, vocabSize, bos, eos);
}

Expected<HFTokenizer> HFTokenizer::fromJSON(StringRef text, StringRef context,
                                            int32_t vocabSize, int bos,
                                            int eos) {
  Expected<json::Value> parsed = json::parse(text);
  if (!parsed)
    return makeError(context, "is not JSON: " + toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return makeError(context, "is not a JSON object");
  HFTokenizer t;
  t.vocabSize = vocabSize;
  t.bos = bos;
  t.eos = eos;
  t.pieces.assign(vocabSize, "");
  t.isSpecial.assign(vocabSize, false);
  std::vector<bool> assigned(vocabSize, false);
  auto unsupported = [&](StringRef field, const json::Value &value) {
    std::string text;
    raw_string_ostream os(text);
    os << value;
    if (text.size() > 120)
      text = text.substr(0, 117) + "...";
    return makeError(context, "\"" + field + "\" is " + text +
                                  ", which is not supported (only "
                                  "SentencePiece-style BPE tokenizers are)");
  };
  auto isNullOr = [](const json::Value *v) {
    return !v || v->kind() == json::Value::Null;
  };
  auto define = [&](int id, StringRef piece, StringRef where) -> Error {
    if (id < 0 || id >= vocabSize)
      return makeError(context, formatv("{0} has id {1} for \"{2}\", outside "
                                        "the model's vocabulary of {3}",
                                        where, id, piece, vocabSize)
                                    .str());
    if (assigned[id] && t.pieces[id] != piece)
      return makeError(context, formatv("{0}: id {1} is both \"{2}\" and "
                                        "\"{3}\"",
                                        where, id, t.pieces[id], piece)
                                    .str());
    assigned[id] = true;
    t.pieces[id] = piece.str();
    return Error::success();
  };

  // The model.
  const json::Object *model = root->getObject("model");
  if (!model)
    return makeError(context, "has no \"model\" object");
  std::optional<StringRef> type = model->getString("type");
  if (!type || *type != "BPE")
    return unsupported("model.type", model->get("type") ? *model->get("type")
                                                        : json::Value(nullptr));
  for (const char *field :
       {"dropout", "continuing_subword_prefix", "end_of_word_suffix"}) {
    const json::Value *v = model->get(field);
    if (!isNullOr(v) && !(v->getAsString() && v->getAsString()->empty()))
      return unsupported(std::string("model.") + field, *v);
  }
  t.byteFallback = model->getBoolean("byte_fallback").value_or(false);
  t.fuseUnk = model->getBoolean("fuse_unk").value_or(false);
  t.ignoreMerges = model->getBoolean("ignore_merges").value_or(false);
  const json::Object *vocab = model->getObject("vocab");
  if (!vocab)
    return makeError(context, "has no \"model.vocab\" object");
  for (const auto &[piece, idValue] : *vocab) {
    std::optional<int64_t> id = idValue.getAsInteger();
    if (!id)
      return makeError(context, "model.vocab entry \"" + piece.str() +
                                    "\" is not an integer id");
    if (Error e = define(int(*id), piece.str(), "model.vocab"))
      return std::move(e);
    t.vocab[piece.str()] = int(*id);
  }
  if (std::optional<StringRef> unkName = model->getString("unk_token")) {
    auto it = t.vocab.find(*unkName);
    if (it == t.vocab.end())
      return makeError(context, "model.unk_token \"" + *unkName +
                                    "\" is not in the vocabulary");
    t.unk = it->second;
  }
  t.byteTokens.fill(-1);
  for (unsigned byte = 0; byte < 256; ++byte) {
    auto it = t.vocab.find(byteTokenName(byte));
    if (it != t.vocab.end())
      t.byteTokens[byte] = it->second;
  }
  const json::Array *merges = model->getArray("merges");
  if (!merges)
    return makeError(context, "has no \"model.merges\" list");
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json::Value &merge = (*merges)[rank];
    std::string left, right;
    if (std::optional<StringRef> pair = merge.getAsString()) {
      auto [a, b] = pair->split(' ');
      if (a.empty() || b.empty() || b.contains(' '))
        return makeError(context, formatv("model.merges[{0}] \"{1}\" is not "
                                          "two pieces separated by a space",
                                          rank, *pair)
                                      .str());
      left = a.str();
      right = b.str();
    } else if (const json::Array *pair = merge.getAsArray();
               pair && pair->size() == 2 && (*pair)[0].getAsString() &&
               (*pair)[1].getAsString()) {
      left = (*pair)[0].getAsString()->str();
      right = (*pair)[1].getAsString()->str();
    } else {
      return makeError(context, formatv("model.merges[{0}] is neither \"a "
                                        "b\" nor [a, b]",
                                        rank)
                                    .str());
    }
    auto a = t.vocab.find(left), b = t.vocab.find(right),
         merged = t.vocab.find(left + right);
    if (a == t.vocab.end() || b == t.vocab.end() || merged == t.vocab.end())
      return makeError(context, formatv("model.merges[{0}] \"{1} {2}\" uses "
                                        "a piece that is not in the "
                                        "vocabulary",
                                        rank, left, right)
                                    .str());
    // The first (lowest) rank of a pair wins, as in the Rust library.
    t.merges.try_emplace({a->second, b->second}, int(rank), merged->second);
  }

  // Added tokens.
  if (const json::Array *added = root->getArray("added_tokens")) {
    for (const json::Value &entry : *added) {
      const json::Object *token = entry.getAsObject();
      std::optional<int64_t> id =
          token ? token->getInteger("id") : std::nullopt;
      std::optional<StringRef> content =
          token ? token->getString("content") : std::nullopt;
      if (!id || !content || content->empty())
        return makeError(context, "an added_tokens entry needs an \"id\" and "
                                  "a non-empty \"content\"");
      for (const char *flag : {"single_word", "lstrip", "rstrip"})
        if (token->getBoolean(flag).value_or(false))
          return unsupported(std::string("added_tokens[].") + flag,
                             json::Value(true));
      if (Error e = define(int(*id), *content, "added_tokens"))
        return std::move(e);
      AddedToken a;
      a.content = content->str();
      a.id = int(*id);
      a.normalized = token->getBoolean("normalized").value_or(true);
      a.special = token->getBoolean("special").value_or(false);
      t.isSpecial[a.id] = a.special;
      t.added.push_back(std::move(a));
    }
  }

  // Normalizers.
  auto readNormalizer = [&](const json::Object &n) -> Error {
    std::optional<StringRef> kind = n.getString("type");
    if (kind && *kind == "Prepend") {
      std::optional<StringRef> text = n.getString("prepend");
      if (!text)
        return makeError(context, "a Prepend normalizer needs \"prepend\"");
      t.normalizers.push_back({true, "", text->str()});
      return Error::success();
    }
    if (kind && *kind == "Replace") {
      const json::Object *pattern = n.getObject("pattern");
      std::optional<StringRef> from =
          pattern ? pattern->getString("String") : std::nullopt;
      std::optional<StringRef> to = n.getString("content");
      if (!from || from->empty() || !to)
        return makeError(context, "a Replace normalizer needs a "
                                  "{\"String\": ...} pattern and \"content\" "
                                  "(regex patterns are not supported)");
      t.normalizers.push_back({false, from->str(), to->str()});
      return Error::success();
    }
    return unsupported("normalizer.type",
                       n.get("type") ? *n.get("type") : json::Value(nullptr));
  };
  const json::Value *normalizer = root->get("normalizer");
  if (!isNullOr(normalizer)) {
    const json::Object *n = normalizer->getAsObject();
    if (!n)
      return unsupported("normalizer", *normalizer);
    if (n->getString("type") == std::optional<StringRef>("Sequence")) {
      const json::Array *list = n->getArray("normalizers");
      if (!list)
        return makeError(context, "a Sequence normalizer needs "
                                  "\"normalizers\"");
      for (const json::Value &item : *list) {
        if (!item.getAsObject())
          return unsupported("normalizer.normalizers[]", item);
        if (Error e = readNormalizer(*item.getAsObject()))
          return std::move(e);
      }
    } else if (Error e = readNormalizer(*n)) {
      return std::move(e);
    }
  }
  const json::Value *preTokenizer = root->get("pre_tokenizer");
  if (!isNullOr(preTokenizer))
    return unsupported("pre_tokenizer", *preTokenizer);

  // Decoders.
  auto readDecoder = [&](const json::Object &d) -> Error {
    std::optional<StringRef> kind = d.getString("type");
    if (kind && *kind == "Replace") {
      const json::Object *pattern = d.getObject("pattern");
      std::optional<StringRef> from =
          pattern ? pattern->getString("String") : std::nullopt;
      std::optional<StringRef> to = d.getString("content");
      if (!from || from->empty() || !to)
        return makeError(context, "a Replace decoder needs a {\"String\": "
                                  "...} pattern and \"content\"");
      t.decodeReplace.push_back({from->str(), to->str()});
      return Error::success();
    }
    if (kind && *kind == "ByteFallback") {
      t.decodeByteFallback = true;
      return Error::success();
    }
    if (kind && *kind == "Fuse")
      return Error::success();
    if (kind && *kind == "Strip") {
      std::optional<StringRef> content = d.getString("content");
      if (!content || content->size() != 1)
        return makeError(context, "a Strip decoder needs a one-character "
                                  "\"content\"");
      t.stripContent = content->str();
      t.stripStart = int(d.getInteger("start").value_or(0));
      t.stripStop = int(d.getInteger("stop").value_or(0));
      return Error::success();
    }
    return unsupported("decoder.type",
                       d.get("type") ? *d.get("type") : json::Value(nullptr));
  };
  const json::Value *decoder = root->get("decoder");
  if (!isNullOr(decoder)) {
    const json::Object *d = decoder->getAsObject();
    if (!d)
      return unsupported("decoder", *decoder);
    if (d->getString("type") == std::optional<StringRef>("Sequence")) {
      const json::Array *list = d->getArray("decoders");
      if (!list)
        return makeError(context, "a Sequence decoder needs \"decoders\"");
      for (const json::Value &item : *list) {
        if (!item.getAsObject())
          return unsupported("decoder.decoders[]", item);
        if (Error e = readDecoder(*item.getAsObject()))
          return std::move(e);
      }
    } else if (Error e = readDecoder(*d)) {
      return std::move(e);
    }
  }

  // Normalized added tokens are matched in their normalized form.
  for (AddedToken &a : t.added)
    a.match = a.normalized ? t.normalize(a.content) : a.content;
  // Longest first, so that a token that is a prefix of another loses.
  std::stable_sort(t.added.begin(), t.added.end(),
                   [](const AddedToken &a, const AddedToken &b) {
                     return a.match.size() > b.match.size();
                   });
  if (t.bos < 0 || t.bos >= vocabSize || t.eos < 0 || t.eos >= vocabSize)
    return makeError(context, "the model's BOS/EOS ids are outside the "
                              "vocabulary");
  return t;
}

std::string HFTokenizer::normalize(StringRef text) const {
  std::string result = text.str();
  if (result.empty())
    return result;
  for (const Rewrite &rule : normalizers) {
    if (rule.prepend) {
      result = rule.text + result;
      continue;
    }
    result = replaceAll(result, rule.from, rule.text);
  }
  return result;
}

Error HFTokenizer::splitOnAdded(StringRef text, bool normalizedTokens,
                                std::vector<int> &ids,
                                function_ref<Error(StringRef)> rest) const {
  size_t pieceBegin = 0;
  for (size_t at = 0; at < text.size();) {
    const AddedToken *found = nullptr;
    for (const AddedToken &a : added)
      if (a.normalized == normalizedTokens &&
          text.substr(at).starts_with(a.match)) {
        found = &a;
        break;
      }
    if (!found) {
      ++at;
      continue;
    }
    if (at > pieceBegin)
      if (Error e = rest(text.slice(pieceBegin, at)))
        return e;
    ids.push_back(found->id);
    at += found->match.size();
    pieceBegin = at;
  }
  if (pieceBegin < text.size())
    return rest(text.substr(pieceBegin));
  return Error::success();
}

Error HFTokenizer::encodeWord(StringRef piece, std::vector<int> &ids) const {
  if (ignoreMerges) {
    auto whole = vocab.find(piece);
    if (whole != vocab.end()) {
      ids.push_back(whole->second);
      return Error::success();
    }
  }
  // One symbol per character.
  std::vector<int> symbols;
  for (size_t at = 0; at < piece.size();) {
    size_t length = characterLength(piece.substr(at));
    if (length == 0)
      return makeError("the text", formatv("byte {0} of \"{1}\" is not valid "
                                           "UTF-8",
                                           at, piece)
                                       .str());
    StringRef character = piece.substr(at, length);
    at += length;
    auto it = vocab.find(character);
    if (it != vocab.end()) {
      symbols.push_back(it->second);
      continue;
    }
    if (byteFallback) {
      bool all = true;
      for (char c : character)
        all = all && byteTokens[uint8_t(c)] >= 0;
      if (all) {
        for (char c : character)
          symbols.push_back(byteTokens[uint8_t(c)]);
        continue;
      }
    }
    if (unk < 0)
      return makeError("the text", "the character \"" + character +
                                       "\" is not in the vocabulary, which "
                                       "has no unk token");
    if (!(fuseUnk && !symbols.empty() && symbols.back() == unk))
      symbols.push_back(unk);
  }
  // Merge by rank with a queue of candidate pairs; a popped candidate is
  // stale when either symbol changed since it was pushed.
  const size_t n = symbols.size();
  std::vector<int> next(n), previous(n);
  std::vector<unsigned> version(n, 0);
  for (size_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? int(i + 1) : -1;
    previous[i] = int(i) - 1;
  }
  struct Candidate {
    int rank, left;
    unsigned leftVersion, rightVersion;
    int right;
    bool operator>(const Candidate &o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>,
                      std::greater<Candidate>>
      queue;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0)
      return;
    int right = next[left];
    auto it = merges.find({symbols[left], symbols[right]});
    if (it != merges.end())
      queue.push(
          {it->second.first, left, version[left], version[right], right});
  };
  for (size_t i = 0; i + 1 < n; ++i)
    consider(int(i));
  while (!queue.empty()) {
    Candidate c = queue.top();
    queue.pop();
    if (symbols[c.left] < 0 || next[c.left] != c.right ||
        version[c.left] != c.leftVersion || version[c.right] != c.rightVersion)
      continue;
    symbols[c.left] =
        merges.find({symbols[c.left], symbols[c.right]})->second.second;
    ++version[c.left];
    symbols[c.right] = -1;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0)
      previous[next[c.right]] = c.left;
    consider(previous[c.left]);
    consider(c.left);
  }
  for (size_t i = 0; i < n; ++i)
    if (symbols[i] >= 0)
      ids.push_back(symbols[i]);
  return Error::success();
}

Expected<std::vector<int>> HFTokenizer::encode(StringRef text, bool addBOS,
                                               bool addEOS,
                                               size_t maxTokens) const {
  if (text.size() > maxTokens)
    return makeError("the text", formatv("{0} bytes may need more than {1} "
                                         "tokens",
                                         text.size(), maxTokens)
                                     .str());
  std::vector<int> ids;
  if (addBOS)
    ids.push_back(bos);
  Error error = splitOnAdded(
      text, /*normalizedTokens=*/false, ids, [&](StringRef piece) -> Error {
        std::string normal = normalize(piece);
        return splitOnAdded(
            normal, /*normalizedTokens=*/true, ids,
            [&](StringRef word) { return encodeWord(word, ids); });
      });
  if (error)
    return std::move(error);
  if (addEOS)
    ids.push_back(eos);
  if (ids.size() > maxTokens)
    return makeError("the text", formatv("needs {0} tokens, more than {1}",
                                         ids.size(), maxTokens)
                                     .str());
  return ids;
}

std::string HFTokenizer::tokenText(int token, bool &isByte,
                                   uint8_t &byte) const {
  isByte = false;
  const std::string &piece = pieces[token];
  if (decodeByteFallback && piece.size() == 6 &&
      StringRef(piece).starts_with("<0x") && piece[5] == '>') {
    unsigned value;
    if (!StringRef(piece).substr(3, 2).getAsInteger(16, value)) {
      isByte = true;
      byte = uint8_t(value);
      return "";
    }
  }
  std::string text = piece;
  for (const auto &[from, to] : decodeReplace)
    text = replaceAll(text, from, to);
  return text;
}

std::string HFTokenizer::decodePiece(int previousToken, int token) const {
  if (token < 0 || token >= vocabSize || isSpecial[token] || token == bos ||
      token == eos)
    return "";
  bool isByte;
  uint8_t byte;
  std::string text = tokenText(token, isByte, byte);
  if (isByte)
    return std::string(1, char(byte));
  bool first = previousToken < 0 || previousToken == bos;
  for (int i = 0; first && i < stripStart && !text.empty() &&
                  text.substr(0, stripContent.size()) == stripContent;
       ++i)
    text.erase(0, stripContent.size());
  return text;
}

std::string HFTokenizer::decode(ArrayRef<int> tokens) const {
  std::string result;
  std::string bytes; // Pending <0xNN> bytes.
  auto flush = [&] {
    if (bytes.empty())
      return;
    // Bytes that do not form UTF-8 become U+FFFD each, as in the library.
    const UTF8 *begin = reinterpret_cast<const UTF8 *>(bytes.data());
    if (isLegalUTF8String(&begin, begin + bytes.size()))
      result += bytes;
    else
      for (size_t i = 0; i < bytes.size(); ++i)
        result += "\xEF\xBF\xBD";
    bytes.clear();
  };
  for (int token : tokens) {
    if (token < 0 || token >= vocabSize || isSpecial[token] || token == bos ||
        token == eos)
      continue;
    bool isByte;
    uint8_t byte;
    std::string text = tokenText(token, isByte, byte);
    if (isByte) {
      bytes.push_back(char(byte));
      continue;
    }
    flush();
    result += text;
  }
  flush();
  for (int i = 0; i < stripStart && !stripContent.empty() &&
                  StringRef(result).starts_with(stripContent);
       ++i)
    result.erase(0, stripContent.size());
  for (int i = 0; i < stripStop && !stripContent.empty() &&
                  StringRef(result).ends_with(stripContent);
       ++i)
    result.erase(result.size() - stripContent.size());
  return result;
}
