//===- Model.cpp - llama2.c checkpoint and fp32 forward pass --------------===//

#include "kvprec/Calibration/Model.h"
#include "kvprec/Calibration/InputFile.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <optional>

using namespace llvm;

namespace kvprec::calib {

static constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);
// The legacy export writes cos/sin tables computed in float32; anything
// further away than this is a different RoPE (theta or layout) than the one
// the forward pass implements.
static constexpr float kRopeTableTolerance = 1e-3f;

AttentionObserver::~AttentionObserver() = default;
AttentionBackend::~AttentionBackend() = default;

static Error makeError(StringRef context, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), context + ": " + message);
}

uint64_t LlamaConfig::getNumWeightFloats() const {
  // Saturating arithmetic: a corrupt header must produce a huge (and then
  // rejected) size, not a wrapped-around small one.
  auto mul = [](uint64_t a, uint64_t b) { return SaturatingMultiply(a, b); };
  auto add = [](uint64_t a, uint64_t b) { return SaturatingAdd(a, b); };
  uint64_t layers = numLayers, d = dim, hidden = hiddenDim, vocab = vocabSize,
           heads = numHeads, kvHeads = numKVHeads;
  uint64_t headSize = d / heads;
  uint64_t perLayer = 0;
  perLayer = add(perLayer, d);                                      // rms_att
  perLayer = add(perLayer, mul(d, mul(heads, headSize)));           // wq
  perLayer = add(perLayer, mul(2, mul(d, mul(kvHeads, headSize)))); // wk, wv
  perLayer = add(perLayer, mul(mul(heads, headSize), d));           // wo
  perLayer = add(perLayer, d);                                      // rms_ffn
  perLayer = add(perLayer, mul(3, mul(d, hidden))); // w1, w2, w3
  uint64_t total = mul(vocab, d);                   // embedding
  total = add(total, mul(layers, perLayer));
  total = add(total, d);                               // rms_final
  total = add(total, mul(uint64_t(seqLen), headSize)); // RoPE tables
  if (!sharedClassifier)
    total = add(total, mul(vocab, d)); // wcls
  return total;
}

Error validateLlamaConfig(const LlamaConfig &config, StringRef context) {
  auto requirePositive = [&](StringRef field, int32_t value) -> Error {
    if (value <= 0)
      return makeError(context, formatv("invalid llama2.c header: {0} is {1}, "
                                        "must be positive",
                                        field, value)
                                    .str());
    return Error::success();
  };
  if (Error e = requirePositive("dim", config.dim))
    return e;
  if (Error e = requirePositive("hidden_dim", config.hiddenDim))
    return e;
  if (Error e = requirePositive("n_layers", config.numLayers))
    return e;
  if (Error e = requirePositive("n_heads", config.numHeads))
    return e;
  if (Error e = requirePositive("n_kv_heads", config.numKVHeads))
    return e;
  if (Error e = requirePositive("vocab_size", config.vocabSize))
    return e;
  if (Error e = requirePositive("seq_len", config.seqLen))
    return e;
  if (config.headDim == 0 && config.dim % config.numHeads != 0)
    return makeError(context, formatv("invalid llama2.c header: dim {0} is not "
                                      "divisible by n_heads {1}",
                                      config.dim, config.numHeads)
                                  .str());
  if (config.numHeads % config.numKVHeads != 0)
    return makeError(context,
                     formatv("invalid llama2.c header: n_heads {0} is not "
                             "divisible by n_kv_heads {1}",
                             config.numHeads, config.numKVHeads)
                         .str());
  if (config.getHeadSize() % 2 != 0)
    return makeError(context,
                     formatv("invalid llama2.c header: head size {0} "
                             "(dim / n_heads) is odd, RoPE needs channel pairs",
                             config.getHeadSize())
                         .str());
  return Error::success();
}

Expected<LlamaModel> LlamaModel::load(StringRef path) {
  // Mapped, not read; the header then says how much of it is used.
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, "checkpoint", uint64_t(1) << 40);
  if (!buffer)
    return buffer.takeError();
  Expected<LlamaModel> model = fromBytes((*buffer)->getBuffer(), path);
  if (model)
    model->name = sys::path::stem(path).str();
  return model;
}

Expected<LlamaModel> LlamaModel::fromBytes(StringRef bytes, StringRef path) {
  if (bytes.size() < kHeaderBytes)
    return makeError(path, "file is " + Twine(bytes.size()) +
                               " bytes, shorter than the 28-byte llama2.c "
                               "header");

  int32_t header[7];
  for (int i = 0; i < 7; ++i)
    header[i] =
        static_cast<int32_t>(support::endian::read32le(bytes.data() + 4 * i));
  LlamaModel model;
  LlamaConfig &config = model.config;
  config.dim = header[0];
  config.hiddenDim = header[1];
  config.numLayers = header[2];
  config.numHeads = header[3];
  config.numKVHeads = header[4];
  // A negative vocab_size marks a separate classifier (llama2.c convention).
  config.sharedClassifier = header[5] > 0;
  config.vocabSize = header[5] == std::numeric_limits<int32_t>::min()
                         ? 0
                         : std::abs(header[5]);
  config.seqLen = header[6];
  if (Error e = validateLlamaConfig(config, path))
    return std::move(e);

  uint64_t numFloats = config.getNumWeightFloats();
  uint64_t expectedBytes =
      SaturatingAdd(kHeaderBytes, SaturatingMultiply(numFloats, uint64_t(4)));
  std::string headerText =
      formatv("dim={0} hidden_dim={1} n_layers={2} n_heads={3} "
              "n_kv_heads={4} vocab_size={5} seq_len={6}",
              config.dim, config.hiddenDim, config.numLayers, config.numHeads,
              config.numKVHeads, header[5], config.seqLen)
          .str();
  if (bytes.size() < expectedBytes)
    return makeError(path, formatv("checkpoint is truncated: {0} bytes, but "
                                   "the header ({1}) needs {2} bytes",
                                   bytes.size(), headerText, expectedBytes)
                               .str());
  if (bytes.size() > expectedBytes)
    return makeError(
        path, formatv("checkpoint is {0} bytes, {1} more than the header "
                      "({2}) implies; the header does not describe "
                      "this file",
                      bytes.size(), bytes.size() - expectedBytes, headerText)
                  .str());

  model.weights.resize(numFloats);
  const char *data = bytes.data() + kHeaderBytes;
  for (uint64_t i = 0; i < numFloats; ++i)
    model.weights[i] = bit_cast<float>(support::endian::read32le(data + 4 * i));

  uint64_t d = config.dim, hidden = config.hiddenDim, layers = config.numLayers,
           vocab = config.vocabSize,
           qDim = uint64_t(config.numHeads) * config.getHeadSize(),
           kvDim = config.getKVDim();
  uint64_t offset = 0;
  // Every tensor is checked for NaN and Inf as it is laid out: a non-finite
  // weight would otherwise turn every logit into NaN and generation into a
  // stream of argmax-of-NaN tokens that looks like output.
  std::optional<std::string> nonFinite;
  auto take = [&](uint64_t count, StringRef name, uint64_t perLayer = 0) {
    uint64_t start = offset;
    offset += count;
    for (uint64_t i = start; i < offset && !nonFinite; ++i) {
      if (std::isfinite(model.weights[i]))
        continue;
      uint64_t local = i - start;
      std::string where = perLayer
                              ? formatv("{0}[layer {1}] element {2}", name,
                                        local / perLayer, local % perLayer)
                                    .str()
                              : formatv("{0} element {1}", name, local).str();
      nonFinite = formatv("tensor {0} is {1} (file offset {2}); the "
                          "checkpoint is corrupt",
                          where, model.weights[i], kHeaderBytes + 4 * i)
                      .str();
    }
    return start;
  };
  model.embeddingOffset = take(vocab * d, "token_embedding_table");
  model.attentionNormOffset = take(layers * d, "rms_att_weight", d);
  model.wqOffset = take(layers * qDim * d, "wq", qDim * d);
  model.wkOffset = take(layers * kvDim * d, "wk", kvDim * d);
  model.wvOffset = take(layers * kvDim * d, "wv", kvDim * d);
  model.woOffset = take(layers * d * qDim, "wo", d * qDim);
  model.ffnNormOffset = take(layers * d, "rms_ffn_weight", d);
  model.w1Offset = take(layers * hidden * d, "w1", hidden * d);
  model.w2Offset = take(layers * d * hidden, "w2", d * hidden);
  model.w3Offset = take(layers * hidden * d, "w3", hidden * d);
  model.finalNormOffset = take(d, "rms_final_weight");
  uint64_t halfHead = config.getHeadSize() / 2;
  uint64_t ropeRealOffset =
      take(uint64_t(config.seqLen) * halfHead, "freq_cis_real");
  uint64_t ropeImagOffset =
      take(uint64_t(config.seqLen) * halfHead, "freq_cis_imag");
  model.classifierOffset =
      config.sharedClassifier ? model.embeddingOffset : take(vocab * d, "wcls");
  assert(offset == numFloats && "layout disagrees with the size formula");
  if (nonFinite)
    return makeError(path, *nonFinite);

  // The forward pass computes RoPE as llama2.c does; compare with the file's
  // legacy tables so a checkpoint exported with another RoPE is rejected.
  model.ropeCos.resize(config.seqLen * halfHead);
  model.ropeSin.resize(config.seqLen * halfHead);
  float deviation = 0.0f;
  int32_t headSize = config.getHeadSize();
  for (int32_t pos = 0; pos < config.seqLen; ++pos) {
    for (uint64_t i = 0; i < halfHead; ++i) {
      float freq = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) /
                                                 static_cast<float>(headSize));
      float angle = static_cast<float>(pos) * freq;
      uint64_t index = pos * halfHead + i;
      model.ropeCos[index] = std::cos(angle);
      model.ropeSin[index] = std::sin(angle);
      float fileCos = model.weights[ropeRealOffset + index];
      float fileSin = model.weights[ropeImagOffset + index];
      float diff = std::max(std::fabs(fileCos - model.ropeCos[index]),
                            std::fabs(fileSin - model.ropeSin[index]));
      // NaN in the file must count as a mismatch.
      if (!(diff <= deviation))
        deviation =
            std::isnan(diff) ? std::numeric_limits<float>::infinity() : diff;
    }
  }
  model.ropeTableDeviation = deviation;
  if (!(deviation <= kRopeTableTolerance))
    return makeError(
        path, formatv("the checkpoint's RoPE tables (freq_cis_real/imag) "
                      "differ from cos/sin with theta 10000 by up to "
                      "{0}; this forward pass would not match the model",
                      format("%.3g", deviation))
                  .str());

  return model;
}

ArrayRef<float> LlamaModel::getEmbedding() const {
  return slice(embeddingOffset, uint64_t(config.vocabSize) * config.dim);
}
ArrayRef<float> LlamaModel::getAttentionNorm(int layer) const {
  return slice(attentionNormOffset + uint64_t(layer) * config.dim, config.dim);
}
ArrayRef<float> LlamaModel::getWq(int layer) const {
  uint64_t size = uint64_t(config.numHeads) * config.getHeadSize() * config.dim;
  return slice(wqOffset + layer * size, size);
}
ArrayRef<float> LlamaModel::getWk(int layer) const {
  uint64_t size = uint64_t(config.getKVDim()) * config.dim;
  return slice(wkOffset + layer * size, size);
}
ArrayRef<float> LlamaModel::getWv(int layer) const {
  uint64_t size = uint64_t(config.getKVDim()) * config.dim;
  return slice(wvOffset + layer * size, size);
}
ArrayRef<float> LlamaModel::getWo(int layer) const {
  uint64_t size = uint64_t(config.numHeads) * config.getHeadSize() * config.dim;
  return slice(woOffset + layer * size, size);
}
ArrayRef<float> LlamaModel::getFFNNorm(int layer) const {
  return slice(ffnNormOffset + uint64_t(layer) * config.dim, config.dim);
}
ArrayRef<float> LlamaModel::getW1(int layer) const {
  uint64_t size = uint64_t(config.hiddenDim) * config.dim;
  return slice(w1Offset + layer * size, size);
}
ArrayRef<float> LlamaModel::getW2(int layer) const {
  uint64_t size = uint64_t(config.hiddenDim) * config.dim;
  return slice(w2Offset + layer * size, size);
}
ArrayRef<float> LlamaModel::getW3(int layer) const {
  uint64_t size = uint64_t(config.hiddenDim) * config.dim;
  return slice(w3Offset + layer * size, size);
}
ArrayRef<float> LlamaModel::getFinalNorm() const {
  return slice(finalNormOffset, config.dim);
}
ArrayRef<float> LlamaModel::getClassifier() const {
  return slice(classifierOffset, uint64_t(config.vocabSize) * config.dim);
}

//===----------------------------------------------------------------------===//
// Forward pass
//===----------------------------------------------------------------------===//

void LlamaModel::computeRopeTables() {
  const uint64_t halfHead = config.getHeadSize() / 2;
  ropeCos.resize(uint64_t(config.seqLen) * halfHead);
  ropeSin.resize(uint64_t(config.seqLen) * halfHead);
  for (int32_t pos = 0; pos < config.seqLen; ++pos)
    for (uint64_t i = 0; i < halfHead; ++i) {
      float freq =
          1.0f / std::pow(config.ropeTheta,
                          static_cast<float>(2 * i) /
                              static_cast<float>(config.getHeadSize()));
      float angle = static_cast<float>(pos) * freq;
      ropeCos[pos * halfHead + i] = std::cos(angle);
      ropeSin[pos * halfHead + i] = std::sin(angle);
    }
}

/// out = weight * (x / rms(x)), eps inside the root.
static void rmsNorm(float *out, const float *x, ArrayRef<float> weight,
                    float eps) {
  size_t size = weight.size();
  float sumSquares = 0.0f;
  for (size_t j = 0; j < size; ++j)
    sumSquares += x[j] * x[j];
  sumSquares /= static_cast<float>(size);
  sumSquares += eps;
  float scale = 1.0f / std::sqrt(sumSquares);
  for (size_t j = 0; j < size; ++j)
    out[j] = weight[j] * (scale * x[j]);
}

/// out[rows] = w[rows, cols] * x[cols].
static void matmul(float *out, const float *x, ArrayRef<float> w, size_t cols,
                   size_t rows) {
  assert(w.size() == rows * cols && "matrix size mismatch");
  for (size_t i = 0; i < rows; ++i) {
    const float *row = w.data() + i * cols;
    float sum = 0.0f;
    for (size_t j = 0; j < cols; ++j)
      sum += row[j] * x[j];
    out[i] = sum;
  }
}

/// In-place numerically stable softmax.
static void softmax(float *x, size_t size) {
  float maxValue = x[0];
  for (size_t i = 1; i < size; ++i)
    maxValue = std::max(maxValue, x[i]);
  float sum = 0.0f;
  for (size_t i = 0; i < size; ++i) {
    x[i] = std::exp(x[i] - maxValue);
    sum += x[i];
  }
  for (size_t i = 0; i < size; ++i)
    x[i] /= sum;
}

LlamaRunner::LlamaRunner(const LlamaModel &model) : model(model) {
  const LlamaConfig &config = model.getConfig();
  size_t qDim = size_t(config.numHeads) * config.getHeadSize();
  x.resize(config.dim);
  xb.resize(std::max<size_t>(config.dim, qDim));
  xb2.resize(config.dim);
  hb.resize(config.hiddenDim);
  hb2.resize(config.hiddenDim);
  q.resize(qDim);
  att.resize(size_t(config.numHeads) * config.seqLen);
  logits.resize(config.vocabSize);
  size_t cacheSize =
      size_t(config.numLayers) * config.seqLen * config.getKVDim();
  keyCache.resize(cacheSize);
  valueCache.resize(cacheSize);
}

ArrayRef<float> LlamaRunner::forward(int token, int position,
                                     AttentionObserver *observer) {
  const LlamaConfig &config = model.getConfig();
  assert(token >= 0 && token < config.vocabSize && "token out of range");
  assert(position >= 0 && position < config.seqLen && "position out of range");
  const size_t dim = config.dim, hidden = config.hiddenDim,
               headSize = config.getHeadSize(), kvDim = config.getKVDim(),
               numHeads = config.numHeads, seqLen = config.seqLen,
               qDim = numHeads * headSize, halfHead = headSize / 2;
  const size_t kvMul = config.getQueryHeadsPerKVHead();
  const float scoreScale = 1.0f / std::sqrt(static_cast<float>(headSize));
  const float eps = config.rmsNormEps;
  const bool halfSplit = config.ropeLayout == RopeLayout::HalfSplit;
  ArrayRef<float> ropeCos =
      model.getRopeCos().slice(position * halfHead, halfHead);
  ArrayRef<float> ropeSin =
      model.getRopeSin().slice(position * halfHead, halfHead);

  std::copy_n(model.getEmbedding().data() + size_t(token) * dim, dim,
              x.begin());

  for (int layer = 0; layer < config.numLayers; ++layer) {
    rmsNorm(xb.data(), x.data(), model.getAttentionNorm(layer), eps);

    size_t layerOffset = size_t(layer) * seqLen * kvDim;
    float *key = keyCache.data() + layerOffset + position * kvDim;
    float *value = valueCache.data() + layerOffset + position * kvDim;
    matmul(q.data(), xb.data(), model.getWq(layer), dim, qDim);
    matmul(key, xb.data(), model.getWk(layer), dim, kvDim);
    matmul(value, xb.data(), model.getWv(layer), dim, kvDim);

    // RoPE: rotate the pairs (2i, 2i+1) (llama2.c) or (i, i + hs/2)
    // (Hugging Face) of every head by angle pos * theta^(-2i/hs).
    auto rotate = [&](float *vec, size_t size) {
      for (size_t head = 0; head < size; head += headSize)
        for (size_t pair = 0; pair < halfHead; ++pair) {
          size_t a = halfSplit ? head + pair : head + 2 * pair;
          size_t b = halfSplit ? a + halfHead : a + 1;
          float c = ropeCos[pair], s = ropeSin[pair];
          float v0 = vec[a], v1 = vec[b];
          vec[a] = v0 * c - v1 * s;
          vec[b] = v0 * s + v1 * c;
        }
    };
    rotate(q.data(), qDim);
    rotate(key, kvDim);

    if (backend) {
      if (observer)
        backendError = "attention observers need the fp32 cache, not a "
                       "planned backend";
      if (backendError.empty() && layer == 0 && position == 0)
        backendError = backend->reset();
      if (backendError.empty())
        backendError = backend->append(layer, position, ArrayRef(key, kvDim),
                                       ArrayRef(value, kvDim));
      if (backendError.empty())
        backendError = backend->attend(layer, position, q, scoreScale,
                                       MutableArrayRef(xb.data(), qDim));
      if (!backendError.empty())
        return {};
    }
    for (size_t h = 0; h < numHeads && !backend; ++h) {
      const float *qHead = q.data() + h * headSize;
      float *scores = att.data() + h * seqLen;
      size_t kvOffset = (h / kvMul) * headSize;
      for (int t = 0; t <= position; ++t) {
        const float *k = keyCache.data() + layerOffset + t * kvDim + kvOffset;
        float score = 0.0f;
        for (size_t i = 0; i < headSize; ++i)
          score += qHead[i] * k[i];
        scores[t] = score * scoreScale;
      }
      softmax(scores, position + 1);
      float *outHead = xb.data() + h * headSize;
      std::fill_n(outHead, headSize, 0.0f);
      for (int t = 0; t <= position; ++t) {
        const float *v = valueCache.data() + layerOffset + t * kvDim + kvOffset;
        float weight = scores[t];
        for (size_t i = 0; i < headSize; ++i)
          outHead[i] += weight * v[i];
      }
    }

    if (observer) {
      AttentionStep step;
      step.layer = layer;
      step.position = position;
      step.queries = ArrayRef<float>(q);
      step.key = ArrayRef<float>(key, kvDim);
      step.value = ArrayRef<float>(value, kvDim);
      step.weights = ArrayRef<float>(att);
      step.weightStride = seqLen;
      observer->observe(step);
    }

    if (layer == perturbedLayer && perturbation != 0.0f)
      for (size_t i = 0; i < qDim; ++i) {
        // splitmix64 of (seed, position, element): one sign bit.
        uint64_t z = perturbationSeed + (uint64_t(position) * qDim + i + 1) *
                                            0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        xb[i] += (z & 1) ? perturbation : -perturbation;
      }
    matmul(xb2.data(), xb.data(), model.getWo(layer), qDim, dim);
    for (size_t i = 0; i < dim; ++i)
      x[i] += xb2[i];

    // SwiGLU feed-forward: w2(silu(w1 x) * w3 x).
    rmsNorm(xb.data(), x.data(), model.getFFNNorm(layer), eps);
    matmul(hb.data(), xb.data(), model.getW1(layer), dim, hidden);
    matmul(hb2.data(), xb.data(), model.getW3(layer), dim, hidden);
    for (size_t i = 0; i < hidden; ++i) {
      float gate = hb[i];
      hb[i] = gate * (1.0f / (1.0f + std::exp(-gate))) * hb2[i];
    }
    matmul(xb.data(), hb.data(), model.getW2(layer), hidden, dim);
    for (size_t i = 0; i < dim; ++i)
      x[i] += xb[i];
  }

  rmsNorm(x.data(), x.data(), model.getFinalNorm(), eps);
  matmul(logits.data(), x.data(), model.getClassifier(), dim, config.vocabSize);
  return logits;
}

} // namespace kvprec::calib
