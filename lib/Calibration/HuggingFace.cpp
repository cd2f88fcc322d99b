//===- HuggingFace.cpp - Hugging Face Llama checkpoints -------------------===//
//
// LlamaModel::loadHuggingFace: config.json of a LlamaForCausalLM, and its
// weights from model.safetensors or the shards of
// model.safetensors.index.json, under the tensor names of `transformers`.
// Every setting the forward pass does not implement is an error naming the
// config field, so a model it would compute wrongly is never loaded.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/InputFile.h"
#include "kvprec/Calibration/Model.h"
#include "kvprec/Calibration/SafeTensors.h"

#include "llvm/ADT/APFloat.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

using namespace llvm;
using namespace kvprec::calib;

namespace {
Error makeError(StringRef context, const Twine &message) {
  return createStringError(inconvertibleErrorCode(),
                           context + ": " + message.str());
}

/// The fields of config.json the loader reads.
class ConfigReader {
public:
  ConfigReader(const json::Object &object, std::string path)
      : object(object), path(std::move(path)) {}

  /// A positive integer field; `fallback` when absent (nullopt: required).
  Error readPositive(StringRef field, int32_t &out,
                     std::optional<int32_t> fallback = std::nullopt) {
    const json::Value *value = object.get(field);
    if (!value || value->kind() == json::Value::Null) {
      if (fallback) {
        out = *fallback;
        return Error::success();
      }
      return makeError(path, "config has no \"" + field +
                                 "\", which a Llama model needs");
    }
    std::optional<int64_t> number = value->getAsInteger();
    if (!number || *number <= 0 || *number > (int64_t(1) << 30))
      return makeError(path, "\"" + field +
                                 "\" must be a positive integer below 2^30");
    out = int32_t(*number);
    return Error::success();
  }
  Error readNumber(StringRef field, float &out, double fallback,
                   bool positive = true) {
    const json::Value *value = object.get(field);
    if (!value || value->kind() == json::Value::Null) {
      out = float(fallback);
      return Error::success();
    }
    std::optional<double> number = value->getAsNumber();
    if (!number || !std::isfinite(*number) || (positive && !(*number > 0)))
      return makeError(path, "\"" + field + "\" must be a positive number");
    out = float(*number);
    return Error::success();
  }
  Error readBool(StringRef field, bool &out, bool fallback) {
    const json::Value *value = object.get(field);
    if (!value || value->kind() == json::Value::Null) {
      out = fallback;
      return Error::success();
    }
    std::optional<bool> flag = value->getAsBoolean();
    if (!flag)
      return makeError(path, "\"" + field + "\" must be true or false");
    out = *flag;
    return Error::success();
  }
  /// A token id: an integer, or a list whose first entry is used.
  Error readToken(StringRef field, int32_t &out, int32_t fallback) {
    const json::Value *value = object.get(field);
    if (!value || value->kind() == json::Value::Null) {
      out = fallback;
      return Error::success();
    }
    if (const json::Array *list = value->getAsArray()) {
      if (list->empty())
        return makeError(path, "\"" + field + "\" is an empty list");
      value = &(*list)[0];
    }
    std::optional<int64_t> number = value->getAsInteger();
    if (!number || *number < 0 || *number > (int64_t(1) << 30))
      return makeError(path, "\"" + field + "\" must be a token id");
    out = int32_t(*number);
    return Error::success();
  }
  /// A field that must be absent or have the one value implemented.
  Error requireAbsentOr(StringRef field, const json::Value &implemented,
                        StringRef what) {
    const json::Value *value = object.get(field);
    if (!value || value->kind() == json::Value::Null || *value == implemented)
      return Error::success();
    std::string text;
    raw_string_ostream os(text);
    os << *value;
    return makeError(path, "\"" + field + "\" is " + text + ": " + what);
  }

private:
  const json::Object &object;
  std::string path;
};

/// Where each tensor is: the shards, opened once each.
class WeightSource {
public:
  Error open(StringRef directory) {
    SmallString<256> single(directory), index(directory);
    sys::path::append(single, "model.safetensors");
    sys::path::append(index, "model.safetensors.index.json");
    if (sys::fs::exists(single)) {
      Expected<SafeTensorsFile> file = SafeTensorsFile::open(single);
      if (!file)
        return file.takeError();
      files.push_back(std::move(*file));
      for (const SafeTensorEntry &entry : files.back().getTensors())
        where[entry.name] = 0;
      return Error::success();
    }
    if (!sys::fs::exists(index))
      return makeError(directory, "has neither model.safetensors nor "
                                  "model.safetensors.index.json");
    Expected<std::unique_ptr<MemoryBuffer>> buffer = openRegularFile(
        index, "safetensors index", uint64_t(64) << 20, /*isText=*/true);
    if (!buffer)
      return buffer.takeError();
    Expected<json::Value> parsed = json::parse((*buffer)->getBuffer());
    if (!parsed)
      return makeError(index, "is not JSON: " + toString(parsed.takeError()));
    const json::Object *root = parsed->getAsObject();
    const json::Object *map = root ? root->getObject("weight_map") : nullptr;
    if (!map)
      return makeError(index, "has no \"weight_map\" object");
    std::map<std::string, size_t> shardIndex;
    for (const auto &[name, shard] : *map) {
      std::optional<StringRef> file = shard.getAsString();
      if (!file || file->empty() || file->contains('/') ||
          file->contains('\\') || *file == "..")
        return makeError(index, "weight_map entry \"" + name.str() +
                                    "\" must name a file in the directory");
      auto [it, added] = shardIndex.insert({file->str(), files.size()});
      if (added) {
        SmallString<256> shardPath(directory);
        sys::path::append(shardPath, *file);
        if (!sys::fs::exists(shardPath))
          return makeError(index, "weight_map names the shard \"" + *file +
                                      "\" (for \"" + name.str() +
                                      "\"), which does not exist");
        Expected<SafeTensorsFile> opened = SafeTensorsFile::open(shardPath);
        if (!opened)
          return opened.takeError();
        files.push_back(std::move(*opened));
      }
      if (!files[it->second].lookup(name.str()))
        return makeError(index, "weight_map puts \"" + name.str() + "\" in " +
                                    *file + ", which has no such tensor");
      where[name.str()] = it->second;
    }
    // Tensors the shards hold but the index does not list are not used.
    return Error::success();
  }

  /// The tensor `name` (or, for tied embeddings, the tensor the metadata
  /// names as its alias) as f32, checked against `shape`.
  Error read(StringRef name, ArrayRef<int64_t> shape, std::vector<float> &out,
             StringRef alias = "") {
    auto found = where.find(name.str());
    std::string used = name.str();
    if (found == where.end() && !alias.empty()) {
      found = where.find(alias.str());
      used = alias.str();
    }
    if (found == where.end())
      return makeError(
          describe(),
          "has no tensor \"" + name + "\"" +
              (alias.empty() ? "" : " (nor its alias \"" + alias + "\")"));
    const SafeTensorsFile &file = files[found->second];
    const SafeTensorEntry *entry = file.lookup(used);
    if (ArrayRef<int64_t>(entry->shape) != shape)
      return makeError(file.getName(), "tensor \"" + used + "\" has shape " +
                                           formatShape(entry->shape) +
                                           ", expected " + formatShape(shape) +
                                           " from config.json");
    ArrayRef<uint8_t> bytes = file.getBytes(*entry);
    const int64_t n = entry->getNumElements();
    out.resize(n);
    switch (entry->dtype) {
    case DType::F32:
      std::memcpy(out.data(), bytes.data(), n * 4);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits = uint32_t(bytes[2 * i]) | uint32_t(bytes[2 * i + 1])
                                                     << 8;
        bits <<= 16;
        std::memcpy(&out[i], &bits, 4);
      }
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = uint16_t(bytes[2 * i]) | uint16_t(bytes[2 * i + 1]) << 8;
        out[i] = APFloat(APFloat::IEEEhalf(), APInt(16, h)).convertToFloat();
      }
      break;
    default:
      return makeError(file.getName(),
                       "tensor \"" + used + "\" has dtype " +
                           getDTypeName(entry->dtype) +
                           "; Llama weights must be F32, F16 or BF16");
    }
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(out[i]))
        return makeError(file.getName(), formatv("tensor \"{0}\" element {1} "
                                                 "is not finite",
                                                 used, i));
    dtypes.insert(getDTypeName(entry->dtype).str());
    consumed.insert(used);
    return Error::success();
  }

  /// Tensors of the checkpoint that no part of the model reads.
  std::vector<std::string> unused() const {
    std::vector<std::string> result;
    for (const auto &[name, file] : where)
      if (!consumed.count(name))
        result.push_back(name);
    return result;
  }
  const std::set<std::string> &getDTypes() const { return dtypes; }
  /// The tied-embedding alias in the metadata of the first file, if any.
  std::string getAlias(StringRef name) const {
    if (files.empty())
      return "";
    auto it = files[0].getMetadata().find(name.str());
    return it == files[0].getMetadata().end() ? "" : it->second;
  }

private:
  std::string describe() const {
    return files.empty()       ? std::string("the checkpoint")
           : files.size() == 1 ? files[0].getName().str()
                               : "the shards of model.safetensors.index.json";
  }

  std::vector<SafeTensorsFile> files;
  std::map<std::string, size_t> where;
  std::set<std::string> consumed, dtypes;
};
} // namespace

Expected<LlamaModel> LlamaModel::loadHuggingFace(StringRef directory) {
  if (!sys::fs::is_directory(directory))
    return makeError(directory, "is not a directory (--model takes a Hugging "
                                "Face model directory)");
  SmallString<256> configPath(directory);
  sys::path::append(configPath, "config.json");
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(configPath, "config", uint64_t(1) << 20, /*isText=*/true);
  if (!buffer)
    return buffer.takeError();
  std::string path = configPath.str().str();
  Expected<json::Value> parsed = json::parse((*buffer)->getBuffer());
  if (!parsed)
    return makeError(path, "is not JSON: " + toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return makeError(path, "is not a JSON object");

  // Only the Llama architecture.
  const json::Array *architectures = root->getArray("architectures");
  std::optional<StringRef> modelType = root->getString("model_type");
  bool isLlama = modelType && *modelType == "llama";
  if (architectures)
    for (const json::Value &a : *architectures)
      if (std::optional<StringRef> name = a.getAsString())
        isLlama = isLlama || *name == "LlamaForCausalLM";
  if (!isLlama)
    return makeError(path, "\"architectures\"/\"model_type\" is not "
                           "LlamaForCausalLM/llama; only Llama models are "
                           "supported");

  LlamaConfig config;
  ConfigReader reader(*root, path);
  int32_t headDim = 0;
  if (Error e = reader.readPositive("hidden_size", config.dim))
    return std::move(e);
  if (Error e = reader.readPositive("intermediate_size", config.hiddenDim))
    return std::move(e);
  if (Error e = reader.readPositive("num_hidden_layers", config.numLayers))
    return std::move(e);
  if (Error e = reader.readPositive("num_attention_heads", config.numHeads))
    return std::move(e);
  if (Error e = reader.readPositive("num_key_value_heads", config.numKVHeads,
                                    config.numHeads))
    return std::move(e);
  if (Error e = reader.readPositive("vocab_size", config.vocabSize))
    return std::move(e);
  if (Error e = reader.readPositive("max_position_embeddings", config.seqLen))
    return std::move(e);
  if (Error e = reader.readPositive("head_dim", headDim,
                                    config.dim / config.numHeads))
    return std::move(e);
  if (headDim != config.dim / config.numHeads ||
      config.dim % config.numHeads != 0)
    config.headDim = headDim;
  if (Error e = reader.readNumber("rms_norm_eps", config.rmsNormEps, 1e-6))
    return std::move(e);
  if (Error e = reader.readNumber("rope_theta", config.ropeTheta, 10000.0))
    return std::move(e);
  if (Error e = reader.readBool("tie_word_embeddings", config.sharedClassifier,
                                false))
    return std::move(e);
  if (Error e = reader.readToken("bos_token_id", config.bosToken, 1))
    return std::move(e);
  if (Error e = reader.readToken("eos_token_id", config.eosToken, 2))
    return std::move(e);
  // What the forward pass does not implement.
  if (Error e = reader.requireAbsentOr("rope_scaling", json::Value(nullptr),
                                       "RoPE scaling is not implemented"))
    return std::move(e);
  if (Error e = reader.requireAbsentOr("attention_bias", json::Value(false),
                                       "attention biases are not "
                                       "implemented"))
    return std::move(e);
  if (Error e = reader.requireAbsentOr("mlp_bias", json::Value(false),
                                       "MLP biases are not implemented"))
    return std::move(e);
  if (Error e = reader.requireAbsentOr("hidden_act", json::Value("silu"),
                                       "only the SwiGLU (silu) feed-forward "
                                       "is implemented"))
    return std::move(e);
  if (Error e = reader.requireAbsentOr("pretraining_tp", json::Value(1),
                                       "only pretraining_tp 1 is "
                                       "implemented"))
    return std::move(e);
  config.ropeLayout = RopeLayout::HalfSplit;
  if (config.numHeads % config.numKVHeads != 0)
    return makeError(path, formatv("\"num_attention_heads\" {0} is not a "
                                   "multiple of \"num_key_value_heads\" {1}",
                                   config.numHeads, config.numKVHeads)
                               .str());
  if (config.getHeadSize() % 2 != 0)
    return makeError(path, formatv("the head size {0} is odd; RoPE rotates "
                                   "channel pairs",
                                   config.getHeadSize())
                               .str());
  if (config.bosToken >= config.vocabSize ||
      config.eosToken >= config.vocabSize)
    return makeError(path, "\"bos_token_id\"/\"eos_token_id\" is outside "
                           "the vocabulary");
  // Sizes whose weights could not be held. Each field is below 2^30, but
  // their products are not: saturating arithmetic, so that a huge config
  // is refused instead of wrapping around to a small size.
  auto mul = [](uint64_t a, uint64_t b) { return SaturatingMultiply(a, b); };
  auto add = [](uint64_t a, uint64_t b) { return SaturatingAdd(a, b); };
  const uint64_t d = config.dim, hidden = config.hiddenDim,
                 layers = config.numLayers, vocab = config.vocabSize,
                 qDim = mul(config.numHeads, config.getHeadSize()),
                 kvDim = mul(config.numKVHeads, config.getHeadSize());
  const uint64_t perLayer =
      add(add(mul(2, d), mul(2, mul(qDim, d))),
          add(mul(2, mul(kvDim, d)), mul(3, mul(d, hidden))));
  if (perLayer > (uint64_t(1) << 36) ||
      mul(layers, perLayer) > (uint64_t(1) << 37) ||
      mul(vocab, d) > (uint64_t(1) << 36))
    return makeError(path, "the model is too large to load (more than 2^37 "
                           "weights)");

  WeightSource source;
  if (Error e = source.open(directory))
    return std::move(e);

  LlamaModel model;
  model.config = config;
  model.name = sys::path::filename(
                   sys::path::remove_leading_dotslash(directory.rtrim("/")))
                   .str();
  std::vector<float> &w = model.weights;
  std::vector<float> tensor;
  auto append = [&](const std::string &name, ArrayRef<int64_t> shape,
                    StringRef alias = "") -> Error {
    if (Error e = source.read(name, shape, tensor, alias))
      return e;
    w.insert(w.end(), tensor.begin(), tensor.end());
    return Error::success();
  };
  const int64_t D = d, H = hidden, Q = qDim, KV = kvDim, V = vocab;
  std::string embedding = "model.embed_tokens.weight";
  std::string embeddingAlias = source.getAlias(embedding);
  model.embeddingOffset = w.size();
  if (Error e = append(embedding, {V, D}, embeddingAlias))
    return std::move(e);
  auto perLayerTensors = [&](StringRef suffix, ArrayRef<int64_t> shape,
                             uint64_t &offset) -> Error {
    offset = w.size();
    for (int32_t layer = 0; layer < config.numLayers; ++layer)
      if (Error e = append(formatv("model.layers.{0}.{1}", layer, suffix).str(),
                           shape))
        return e;
    return Error::success();
  };
  struct Part {
    const char *suffix;
    SmallVector<int64_t, 2> shape;
    uint64_t *offset;
  } parts[] = {
      {"input_layernorm.weight", {D}, &model.attentionNormOffset},
      {"self_attn.q_proj.weight", {Q, D}, &model.wqOffset},
      {"self_attn.k_proj.weight", {KV, D}, &model.wkOffset},
      {"self_attn.v_proj.weight", {KV, D}, &model.wvOffset},
      {"self_attn.o_proj.weight", {D, Q}, &model.woOffset},
      {"post_attention_layernorm.weight", {D}, &model.ffnNormOffset},
      {"mlp.gate_proj.weight", {H, D}, &model.w1Offset},
      {"mlp.down_proj.weight", {D, H}, &model.w2Offset},
      {"mlp.up_proj.weight", {H, D}, &model.w3Offset},
  };
  for (Part &part : parts)
    if (Error e = perLayerTensors(part.suffix, part.shape, *part.offset))
      return std::move(e);
  model.finalNormOffset = w.size();
  if (Error e = append("model.norm.weight", {D}))
    return std::move(e);
  if (config.sharedClassifier) {
    model.classifierOffset = model.embeddingOffset;
    // A tied checkpoint may store either name, or both (then lm_head is
    // read to check its shape and mark it used).
    if (Error e = source.read("lm_head.weight", {V, D}, tensor))
      consumeError(std::move(e));
  } else {
    model.classifierOffset = w.size();
    if (Error e = append("lm_head.weight", {V, D}))
      return std::move(e);
  }
  for (const std::string &name : source.unused())
    if (!StringRef(name).ends_with("rotary_emb.inv_freq"))
      return makeError(directory,
                       "the checkpoint has a tensor no part of a Llama model "
                       "reads: \"" +
                           name +
                           "\" (biases and other architectures are not "
                           "supported)");
  std::string dtypes;
  for (const std::string &dtype : source.getDTypes())
    dtypes += (dtypes.empty() ? "" : "+") + dtype;
  model.weightDType = dtypes;
  model.computeRopeTables();
  return model;
}
