//===- Generation.cpp - Token sampling and generation loop ----------------===//

#include "kvprec/Calibration/Generation.h"

#include "kvprec/Calibration/Tokenizer.h"

#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace llvm;

namespace kvprec::calib {

int argmax(ArrayRef<float> logits) {
  int best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best])
      best = static_cast<int>(i);
  return best;
}

Sampler::Sampler(float temperature, uint64_t seed)
    : temperature(temperature),
      // xorshift has a fixed point at 0; any other fixed start works.
      state(seed != 0 ? seed : 0x9E3779B97F4A7C15ull) {}

float Sampler::nextUniform() {
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  uint32_t bits = static_cast<uint32_t>((state * 0x2545F4914F6CDD1Dull) >> 32);
  return static_cast<float>(bits >> 8) / 16777216.0f;
}

int Sampler::sample(ArrayRef<float> logits) {
  if (isGreedy())
    return argmax(logits);
  probabilities.resize(logits.size());
  float maxLogit = logits[argmax(logits)];
  float sum = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    probabilities[i] = std::exp((logits[i] - maxLogit) / temperature);
    sum += probabilities[i];
  }
  float coin = nextUniform() * sum;
  float cumulative = 0.0f;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    cumulative += probabilities[i];
    if (coin < cumulative)
      return static_cast<int>(i);
  }
  // Rounding can leave the coin just above the final cumulative sum.
  return static_cast<int>(probabilities.size() - 1);
}

Expected<GenerationResult> generate(LlamaRunner &runner, ArrayRef<int> prompt,
                                    Sampler &sampler,
                                    const GenerationOptions &options,
                                    AttentionObserver *observer) {
  const LlamaConfig &config = runner.getModel().getConfig();
  if (prompt.empty())
    return createStringError(inconvertibleErrorCode(),
                             "generation needs at least one prompt token");
  if (prompt.size() > static_cast<size_t>(config.seqLen))
    return createStringError(
        inconvertibleErrorCode(),
        formatv("prompt has {0} tokens, more than the model's seq_len {1}",
                prompt.size(), config.seqLen)
            .str());
  for (int token : prompt)
    if (token < 0 || token >= config.vocabSize)
      return createStringError(
          inconvertibleErrorCode(),
          formatv("prompt token {0} is outside the vocabulary [0, {1})", token,
                  config.vocabSize)
              .str());

  GenerationResult result;
  result.tokens.assign(prompt.begin(), prompt.end());
  result.numPromptTokens = prompt.size();
  ArrayRef<float> logits;
  auto backendFailure = [&](int position) {
    return createStringError(
        inconvertibleErrorCode(),
        formatv("position {0}: {1}", position, runner.getBackendError()).str());
  };
  for (size_t pos = 0; pos < prompt.size(); ++pos) {
    logits = runner.forward(prompt[pos], static_cast<int>(pos), observer);
    if (!runner.getBackendError().empty())
      return backendFailure(static_cast<int>(pos));
  }
  result.positionsRun = static_cast<int>(prompt.size());

  for (int step = 0; step < options.steps; ++step) {
    // Finite weights can still overflow (f32 activations past 3.4e38); a
    // sample drawn from non-finite logits is meaningless, so stop with the
    // step rather than print argmax-of-NaN tokens.
    for (size_t i = 0; i < logits.size(); ++i)
      if (!std::isfinite(logits[i]))
        return createStringError(
            inconvertibleErrorCode(),
            formatv("logits at position {0} (generation step {1}) are not "
                    "finite: logit {2} is {3}",
                    result.positionsRun - 1, step, i, logits[i])
                .str());
    int next = sampler.sample(logits);
    // BOS delimits texts (llama2.c's rule): a sampled BOS ends the text.
    if (next == config.bosToken)
      break;
    result.tokens.push_back(next);
    int position = static_cast<int>(result.tokens.size()) - 1;
    bool isLast = step + 1 == options.steps;
    if (position >= config.seqLen || (isLast && !options.runLastToken))
      break;
    logits = runner.forward(next, position, observer);
    if (!runner.getBackendError().empty())
      return backendFailure(position);
    result.positionsRun = position + 1;
  }
  return result;
}

} // namespace kvprec::calib
