//===- Model.h - Llama checkpoints and the fp32 forward pass ----*- C++ -*-===//
//
// Loads a llama2.c "legacy" checkpoint (7 x int32 header, then fp32 weights)
// or a Hugging Face LlamaForCausalLM directory (HuggingFace.cpp) and runs the
// reference fp32 forward pass one token at a time, exposing
// every layer's attention step (q after RoPE, the K/V appended to the cache,
// the softmax weights) to an observer. This is what kvprec-calib uses to
// measure calibration statistics on a real model.
//
// The arithmetic follows llama2.c: RMSNorm (eps 1e-5 for llama2.c, the
// config's rms_norm_eps for Hugging Face), RoPE inside each head with theta
// 10000 (or rope_theta) on adjacent channel pairs (llama2.c) or on channels
// i and i + head_size/2 (Hugging Face's rotate_half), grouped-query attention
// (query head h reads KV head h / (n_heads / n_kv_heads)), softmax attention
// scaled by 1/sqrt(head_size), a SwiGLU feed-forward, and a classifier that
// is either tied to the embedding or stored separately.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_MODEL_H
#define KVPREC_CALIBRATION_MODEL_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvprec::calib {

/// Which channels of a head RoPE rotates together.
enum class RopeLayout {
  /// (2i, 2i + 1), as llama2.c.
  AdjacentPairs,
  /// (i, i + head_size / 2), as Hugging Face's rotate_half.
  HalfSplit,
};

/// The checkpoint header, with the sign of vocab_size decoded, and the
/// settings a Hugging Face config.json adds.
struct LlamaConfig {
  int32_t dim = 0;
  int32_t hiddenDim = 0;
  int32_t numLayers = 0;
  int32_t numHeads = 0;
  int32_t numKVHeads = 0;
  int32_t vocabSize = 0;
  int32_t seqLen = 0;
  /// True when the classifier is the embedding table (header vocab_size > 0).
  bool sharedClassifier = true;
  /// head_dim when the config gives one that differs from dim / n_heads;
  /// 0 otherwise.
  int32_t headDim = 0;
  float rmsNormEps = 1e-5f;
  float ropeTheta = 10000.0f;
  RopeLayout ropeLayout = RopeLayout::AdjacentPairs;
  int32_t bosToken = 1, eosToken = 2;

  int32_t getHeadSize() const { return headDim ? headDim : dim / numHeads; }
  int32_t getKVDim() const { return getHeadSize() * numKVHeads; }
  int32_t getQueryHeadsPerKVHead() const { return numHeads / numKVHeads; }

  /// Number of float32 values the header implies, including the legacy RoPE
  /// tables and the separate classifier when there is one.
  uint64_t getNumWeightFloats() const;
};

/// Checks a decoded header: positive sizes, dim % n_heads == 0 (without an
/// explicit head_dim), n_heads % n_kv_heads == 0, an even head size, and
/// sizes whose weights fit in memory. `context` names the file.
llvm::Error validateLlamaConfig(const LlamaConfig &config,
                                llvm::StringRef context);

/// A loaded checkpoint. Weights are stored in the file's layout; the
/// accessors return row-major [out, in] matrices as llama2.c's matmul reads
/// them.
class LlamaModel {
public:
  /// Loads and validates `path`. Fails on a short or over-long file, a bad
  /// header, or legacy RoPE tables that do not match theta = 10000.
  static llvm::Expected<LlamaModel> load(llvm::StringRef path);
  /// Validates and decodes a checkpoint held in memory; `context` names it
  /// in errors (a path, or "<fuzz input>").
  static llvm::Expected<LlamaModel> fromBytes(llvm::StringRef bytes,
                                              llvm::StringRef context);
  /// Loads a Hugging Face LlamaForCausalLM directory: config.json and
  /// model.safetensors (or the shards model.safetensors.index.json names),
  /// F32, F16 or BF16 weights converted to f32 (HuggingFace.cpp).
  static llvm::Expected<LlamaModel> loadHuggingFace(llvm::StringRef directory);

  const LlamaConfig &getConfig() const { return config; }
  /// The file name without directory and extension ("stories260K"), or the
  /// directory's name for Hugging Face models.
  llvm::StringRef getName() const { return name; }
  /// The dtypes the weights were stored in ("F32", "BF16", or several
  /// joined by '+'), before conversion to f32.
  llvm::StringRef getWeightDType() const { return weightDType; }
  /// Largest |file table - computed cos/sin| over the legacy RoPE tables.
  float getRopeTableDeviation() const { return ropeTableDeviation; }

  llvm::ArrayRef<float> getEmbedding() const;              // [vocab, dim]
  llvm::ArrayRef<float> getAttentionNorm(int layer) const; // [dim]
  llvm::ArrayRef<float> getWq(int layer) const;            // [n_heads*hs, dim]
  llvm::ArrayRef<float> getWk(int layer) const;            // [kv_dim, dim]
  llvm::ArrayRef<float> getWv(int layer) const;            // [kv_dim, dim]
  llvm::ArrayRef<float> getWo(int layer) const;            // [dim, n_heads*hs]
  llvm::ArrayRef<float> getFFNNorm(int layer) const;       // [dim]
  llvm::ArrayRef<float> getW1(int layer) const;            // [hidden, dim]
  llvm::ArrayRef<float> getW2(int layer) const;            // [dim, hidden]
  llvm::ArrayRef<float> getW3(int layer) const;            // [hidden, dim]
  llvm::ArrayRef<float> getFinalNorm() const;              // [dim]
  llvm::ArrayRef<float> getClassifier() const;             // [vocab, dim]
  /// cos and sin of position * 10000^(-2i/head_size), [seq_len, hs/2], as
  /// the forward pass uses them (computed, not read from the file).
  llvm::ArrayRef<float> getRopeCos() const { return ropeCos; }
  llvm::ArrayRef<float> getRopeSin() const { return ropeSin; }

private:
  LlamaModel() = default;
  llvm::ArrayRef<float> slice(uint64_t offset, uint64_t count) const {
    return llvm::ArrayRef<float>(weights).slice(offset, count);
  }

  /// Computes ropeCos/ropeSin from the config.
  void computeRopeTables();

  LlamaConfig config;
  std::string name;
  std::string weightDType = "F32";
  std::vector<float> weights;
  std::vector<float> ropeCos, ropeSin;
  float ropeTableDeviation = 0.0f;
  // Offsets (in floats) of each tensor inside `weights`.
  uint64_t embeddingOffset = 0, attentionNormOffset = 0, wqOffset = 0,
           wkOffset = 0, wvOffset = 0, woOffset = 0, ffnNormOffset = 0,
           w1Offset = 0, w2Offset = 0, w3Offset = 0, finalNormOffset = 0,
           classifierOffset = 0;
};

/// What one layer's attention step saw at one position. Valid only during
/// the observer callback.
struct AttentionStep {
  int layer = 0;
  /// The query position p; the step attends over positions [0, p].
  int position = 0;
  /// [n_heads, head_size]: the queries after RoPE (not scaled by 1/sqrt(hs)).
  llvm::ArrayRef<float> queries;
  /// [n_kv_heads, head_size]: the K (after RoPE) and V appended at `position`.
  llvm::ArrayRef<float> key;
  llvm::ArrayRef<float> value;
  /// Softmax weights of query head h over positions [0, p].
  llvm::ArrayRef<float> getWeights(int head) const {
    return weights.slice(static_cast<size_t>(head) * weightStride,
                         position + 1);
  }

  llvm::ArrayRef<float> weights;
  size_t weightStride = 0;
};

/// Receives every attention step of a forward pass.
class AttentionObserver {
public:
  virtual ~AttentionObserver();
  virtual void observe(const AttentionStep &step) = 0;
};

/// Replaces the runner's fp32 KV cache and attention: a cache stored as a
/// plan says (kvprec-calib --ir), emulated or compiled. Errors are
/// messages; the runner stops at the first one.
class AttentionBackend {
public:
  virtual ~AttentionBackend();
  /// Starts a new sequence (position 0 is fed again).
  virtual std::string reset() = 0;
  /// Stores K (after RoPE) and V of `position` of `layer`, each
  /// [n_kv_heads, head_size].
  virtual std::string append(int layer, int position, llvm::ArrayRef<float> key,
                             llvm::ArrayRef<float> value) = 0;
  /// Attention of every query head ([n_heads, head_size], after RoPE) over
  /// positions [0, position] of `layer`, with softmax scale `scale`, into
  /// `output` ([n_heads, head_size]).
  virtual std::string attend(int layer, int position,
                             llvm::ArrayRef<float> queries, float scale,
                             llvm::MutableArrayRef<float> output) = 0;
};

/// Runs the forward pass of a LlamaModel, keeping its own KV cache. Feed a
/// sequence position by position from 0; feeding position 0 again starts a
/// new sequence (later positions of the old one are never read).
class LlamaRunner {
public:
  explicit LlamaRunner(const LlamaModel &model);

  /// Runs `token` at `position` and returns the logits (valid until the next
  /// call). Requires 0 <= token < vocab, 0 <= position < seq_len, and that
  /// positions [0, position) of this sequence were fed before.
  llvm::ArrayRef<float> forward(int token, int position,
                                AttentionObserver *observer = nullptr);

  /// Runs attention through `backend` (not owned; null for the runner's own
  /// fp32 cache). Observers see no weights then and are refused.
  void setBackend(AttentionBackend *backend) { this->backend = backend; }
  /// Adds, at `layer`, an error of +-`error` to every attention output
  /// element before the output projection, the sign drawn from `seed`, the
  /// position and the element (so a rerun draws the same); error 0 turns it
  /// off. What kvprec-calib collect --sensitivity-error measures with.
  void setAttentionPerturbation(int layer, float error, uint64_t seed) {
    perturbedLayer = layer;
    perturbation = error;
    perturbationSeed = seed;
  }
  /// The first backend failure; forward returns no logits after one.
  const std::string &getBackendError() const { return backendError; }

  const LlamaModel &getModel() const { return model; }

private:
  const LlamaModel &model;
  // Activations, sized once from the config.
  std::vector<float> x, xb, xb2, hb, hb2, q, att, logits;
  // [layer, seq_len, kv_dim]
  std::vector<float> keyCache, valueCache;
  AttentionBackend *backend = nullptr;
  int perturbedLayer = -1;
  float perturbation = 0.0f;
  uint64_t perturbationSeed = 0;
  std::string backendError;
};

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_MODEL_H
