//===- Generation.h - Token sampling and generation loop --------*- C++ -*-===//
//
// The llama2.c generation loop on top of LlamaRunner: feed the prompt, then
// pick each next token greedily (argmax) or by temperature sampling with a
// seeded xorshift PRNG, stopping at BOS (which delimits sequences) or when
// the context is full.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_GENERATION_H
#define KVPREC_CALIBRATION_GENERATION_H

#include "kvprec/Calibration/Model.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace kvprec::calib {

/// Index of the largest logit (the first one on ties).
int argmax(llvm::ArrayRef<float> logits);

/// Picks next tokens: greedy when the temperature is 0, otherwise samples
/// softmax(logits / temperature) with a deterministic xorshift64* generator.
class Sampler {
public:
  Sampler(float temperature, uint64_t seed);

  int sample(llvm::ArrayRef<float> logits);
  bool isGreedy() const { return temperature == 0.0f; }

  /// Uniform float in [0, 1) from 24 random bits.
  float nextUniform();

private:
  float temperature;
  uint64_t state;
  std::vector<float> probabilities;
};

struct GenerationOptions {
  /// Number of tokens to generate after the prompt.
  int steps = 256;
  /// Also run the last generated token through the model, so every token of
  /// the result is a query position (what calibration wants; plain text
  /// generation does not need it).
  bool runLastToken = false;
};

struct GenerationResult {
  /// Prompt tokens followed by the generated ones.
  std::vector<int> tokens;
  size_t numPromptTokens = 0;
  /// Positions that went through the forward pass.
  int positionsRun = 0;
};

/// Feeds `prompt` (which must start a sequence, usually with BOS) position by
/// position, then generates up to `options.steps` tokens. Stops early when
/// BOS is sampled (as llama2.c does) or when no position is left. Fails when
/// the prompt is empty or longer than the model's seq_len.
llvm::Expected<GenerationResult>
generate(LlamaRunner &runner, llvm::ArrayRef<int> prompt, Sampler &sampler,
         const GenerationOptions &options,
         AttentionObserver *observer = nullptr);

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_GENERATION_H
