//===- DownstreamSensitivity.cpp - how layer errors move the logits -------===//

#include "kvprec/Calibration/DownstreamSensitivity.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>

using namespace llvm;
using namespace kvprec::calib;

std::vector<double> kvprec::calib::computeLogSoftmax(ArrayRef<float> logits) {
  double top = -INFINITY;
  for (float x : logits)
    top = std::max(top, double(x));
  double sum = 0.0;
  for (float x : logits)
    sum += std::exp(double(x) - top);
  double log = top + std::log(sum);
  std::vector<double> result(logits.size());
  for (size_t i = 0; i < logits.size(); ++i)
    result[i] = double(logits[i]) - log;
  return result;
}

double kvprec::calib::computeKLDivergence(ArrayRef<float> p,
                                          ArrayRef<float> q) {
  std::vector<double> lp = computeLogSoftmax(p), lq = computeLogSoftmax(q);
  double kl = 0.0;
  for (size_t i = 0; i < lp.size(); ++i)
    kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  return std::max(kl, 0.0);
}

Expected<std::vector<double>>
kvprec::calib::measureLayerKLSensitivity(const LlamaModel &model,
                                         ArrayRef<std::vector<int>> sequences,
                                         float error, uint64_t seed) {
  const LlamaConfig &config = model.getConfig();
  if (!(error > 0.0f) || !std::isfinite(error))
    return createStringError(inconvertibleErrorCode(),
                             "the sensitivity error must be positive");
  // The unperturbed logits of every position.
  LlamaRunner runner(model);
  std::vector<std::vector<float>> reference;
  for (const std::vector<int> &tokens : sequences)
    for (size_t t = 0; t + 1 < tokens.size(); ++t) {
      ArrayRef<float> logits = runner.forward(tokens[t], int(t));
      reference.emplace_back(logits.begin(), logits.end());
    }
  std::vector<double> result(config.numLayers, 0.0);
  if (reference.empty())
    return result;
  for (int layer = 0; layer < config.numLayers; ++layer) {
    runner.setAttentionPerturbation(layer, error, seed + layer);
    double sum = 0.0;
    size_t at = 0;
    for (const std::vector<int> &tokens : sequences)
      for (size_t t = 0; t + 1 < tokens.size(); ++t) {
        ArrayRef<float> logits = runner.forward(tokens[t], int(t));
        for (float x : logits)
          if (!std::isfinite(x))
            return createStringError(
                inconvertibleErrorCode(),
                formatv("the logits with layer {0} perturbed are not finite",
                        layer)
                    .str());
        sum += computeKLDivergence(reference[at++], logits);
      }
    result[layer] = sum / double(reference.size()) / (double(error) * error);
  }
  runner.setAttentionPerturbation(-1, 0.0f, 0);
  return result;
}
