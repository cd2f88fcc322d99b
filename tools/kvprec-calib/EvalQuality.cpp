//===- EvalQuality.cpp - what a plan does to the model's output -----------===//

#include "EvalQuality.h"

#include "kvprec/Calibration/DownstreamSensitivity.h"
#include "kvprec/Calibration/Generation.h"
#include "kvprec/Calibration/SafeTensors.h"

#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <algorithm>
#include <cmath>

using namespace llvm;
using namespace kvprec::calib;

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message.str());
}

/// JSON has no infinities: write them as null.
static json::Value number(double value) {
  if (std::isfinite(value))
    return value;
  return nullptr;
}

namespace {
void writeTotals(json::OStream &json, const QualityTotals &totals) {
  json.attribute("mean_kl", number(totals.getMeanKL()));
  json.attribute("max_kl", number(totals.maxKL));
  json.attribute("top1_agreement", number(totals.getTop1Agreement()));
}

/// The perplexity of both runs on the prompts' own tokens.
void writePerplexities(json::OStream &json, const QualityTotals &totals) {
  json.attribute("prompt_tokens", totals.promptPositions);
  double n = double(std::max<int64_t>(totals.promptPositions, 1));
  json.attribute("ppl_fp32", number(std::exp(totals.nllExact / n)));
  json.attribute("ppl_plan", number(std::exp(totals.nllPlan / n)));
}

/// The logits of every position of `tokens` but the last (position t
/// predicts tokens[t + 1]), teacher-forced.
Expected<std::vector<std::vector<float>>>
runLogits(LlamaRunner &runner, ArrayRef<int> tokens, StringRef what) {
  std::vector<std::vector<float>> result;
  for (size_t t = 0; t + 1 < tokens.size(); ++t) {
    ArrayRef<float> logits = runner.forward(tokens[t], int(t));
    if (!runner.getBackendError().empty())
      return makeError(
          formatv("{0}, position {1}: {2}", what, t, runner.getBackendError()));
    result.emplace_back(logits.begin(), logits.end());
  }
  return result;
}
} // namespace

void QualityTotals::add(ArrayRef<float> exact, ArrayRef<float> plan, int target,
                        bool inPrompt) {
  double kl = computeKLDivergence(exact, plan);
  sumKL += kl;
  maxKL = std::max(maxKL, kl);
  kls.push_back(kl);
  ++positions;
  agreements += argmax(exact) == argmax(plan);
  if (inPrompt) {
    nllExact -= computeLogSoftmax(exact)[target];
    nllPlan -= computeLogSoftmax(plan)[target];
    ++promptPositions;
  }
}

Expected<QualityMeasurement>
kvprec::calib::measureQuality(const EvalQualityInputs &inputs, bool perLayer) {
  const LlamaModel &model = *inputs.model;
  const LlamaConfig &config = model.getConfig();
  Expected<PlannedCacheType> cache = loadPlannedCacheType(inputs.irPath);
  if (!cache)
    return cache.takeError();
  // Sequences stop at the planned cache's capacity (or the context).
  const int64_t capacity =
      std::min<int64_t>(cache->plan.geometry.capacity, config.seqLen);
  Expected<std::unique_ptr<AttentionBackend>> planned =
      createAttentionBackend(inputs.backend, *cache, config, capacity);
  if (!planned)
    return planned.takeError();
  // The per-layer runs use the same planned cache, one run after another
  // (each starts by resetting it): one compilation, not one per layer.
  std::vector<std::unique_ptr<AttentionBackend>> single;
  if (perLayer)
    for (int layer = 0; layer < config.numLayers; ++layer)
      single.push_back(createSingleLayerBackend(**planned, layer, config));

  LlamaRunner exactRunner(model), planRunner(model);
  planRunner.setBackend(planned->get());
  QualityMeasurement result;
  result.cache = *cache;
  result.capacity = capacity;
  QualityTotals &whole = result.whole;
  if (perLayer)
    result.perLayer.resize(config.numLayers);
  SafeTensorsWriter dump;
  std::vector<float> dumpExact, dumpPlan;
  std::vector<int64_t> dumpTargets, dumpPrompt;

  for (size_t i = 0; i < inputs.prompts.size(); ++i) {
    std::string where =
        formatv("{0}: prompt {1}", inputs.promptsPath, i + 1).str();
    Expected<std::vector<int>> prompt = inputs.tokenizer->encode(
        inputs.prompts[i], /*addBOS=*/true, /*addEOS=*/false, config.seqLen);
    if (!prompt)
      return makeError(where + ": " + toString(prompt.takeError()));
    if (int64_t(prompt->size()) > capacity)
      prompt->resize(capacity);
    // The fp32 model's own greedy continuation.
    Sampler greedy(/*temperature=*/0.0f, /*seed=*/0);
    GenerationOptions options;
    options.steps = inputs.steps;
    Expected<GenerationResult> sequence =
        generate(exactRunner, *prompt, greedy, options);
    if (!sequence)
      return makeError(where + ": " + toString(sequence.takeError()));
    std::vector<int> tokens = sequence->tokens;
    if (int64_t(tokens.size()) > capacity)
      tokens.resize(capacity);
    const size_t promptLength = sequence->numPromptTokens;

    Expected<std::vector<std::vector<float>>> exact =
        runLogits(exactRunner, tokens, where);
    if (!exact)
      return exact.takeError();
    Expected<std::vector<std::vector<float>>> plan =
        runLogits(planRunner, tokens, where + " (planned cache)");
    if (!plan)
      return plan.takeError();
    for (size_t t = 0; t < exact->size(); ++t) {
      bool inPrompt = t + 1 < promptLength;
      whole.add((*exact)[t], (*plan)[t], tokens[t + 1], inPrompt);
      if (!inputs.dumpPath.empty()) {
        dumpExact.insert(dumpExact.end(), (*exact)[t].begin(),
                         (*exact)[t].end());
        dumpPlan.insert(dumpPlan.end(), (*plan)[t].begin(), (*plan)[t].end());
        dumpTargets.push_back(tokens[t + 1]);
        dumpPrompt.push_back(inPrompt);
      }
    }
    for (size_t layer = 0; layer < single.size(); ++layer) {
      LlamaRunner runner(model);
      runner.setBackend(single[layer].get());
      Expected<std::vector<std::vector<float>>> logits =
          runLogits(runner, tokens,
                    formatv("{0} (layer {1} planned)", where, layer).str());
      if (!logits)
        return logits.takeError();
      for (size_t t = 0; t < exact->size(); ++t)
        result.perLayer[layer].add((*exact)[t], (*logits)[t], tokens[t + 1],
                                   t + 1 < promptLength);
    }
  }

  if (!inputs.dumpPath.empty()) {
    int64_t positions = dumpTargets.size();
    dump.addF32("exact", {positions, config.vocabSize}, dumpExact);
    dump.addF32("plan", {positions, config.vocabSize}, dumpPlan);
    dump.addI64("targets", {positions}, dumpTargets);
    dump.addI64("prompt", {positions}, dumpPrompt);
    if (Error e = dump.write(inputs.dumpPath))
      return std::move(e);
  }
  return result;
}

Error kvprec::calib::runEvalQuality(const EvalQualityInputs &inputs,
                                    raw_ostream &os) {
  Expected<QualityMeasurement> measured = measureQuality(inputs);
  if (!measured)
    return measured.takeError();
  const QualityTotals &whole = measured->whole;
  const PlannedCacheType *cache = &measured->cache;
  const int64_t capacity = measured->capacity;
  const LlamaModel &model = *inputs.model;
  const LlamaConfig &config = model.getConfig();
  const certify::Geometry &g = cache->plan.geometry;
  double fp16Bytes =
      double(g.layers) * g.heads * 2 * g.capacity * g.headDim * 2;
  json::OStream json(os, 2);
  json.object([&] {
    json.attribute("model", model.getName());
    json.attribute("ir", inputs.irPath);
    json.attribute("backend", inputs.backend == BackendKind::Compiled
                                  ? "compiled"
                                  : "emulated");
    json.attribute("prompts", int64_t(inputs.prompts.size()));
    json.attribute("steps", inputs.steps);
    json.attribute("max_positions", capacity);
    json.attribute("tokens", whole.positions);
    writeTotals(json, whole);
    writePerplexities(json, whole);
    json.attribute("plan_bytes", number(cache->plan.getTotalBytes()));
    json.attribute("fp16_bytes", number(fp16Bytes));
    json.attribute("bytes_vs_fp16",
                   number(cache->plan.getTotalBytes() / fp16Bytes));
    // Each layer's cache stored as planned, every other layer's exact (in
    // f32): the same measurement, and the bytes of the one planned layer
    // against that layer's cache in fp16. (The whole cache of such a run
    // is not a plan anyone would store: the other layers stay in f32.)
    double layerFp16Bytes = double(g.heads) * 2 * g.capacity * g.headDim * 2;
    json.attributeArray("per_layer", [&] {
      for (int layer = 0; layer < config.numLayers; ++layer)
        json.object([&] {
          const QualityTotals &totals = measured->perLayer[layer];
          json.attribute("layer", layer);
          json.attribute("tokens", totals.positions);
          writeTotals(json, totals);
          writePerplexities(json, totals);
          double layerBytes = cache->plan.getLayerBytes(layer);
          json.attribute("layer_plan_bytes", number(layerBytes));
          json.attribute("layer_fp16_bytes", number(layerFp16Bytes));
          json.attribute("layer_bytes_vs_fp16",
                         number(layerBytes / layerFp16Bytes));
        });
    });
  });
  os << "\n";
  if (inputs.annotatePath.empty())
    return Error::success();
  return annotateQuality(inputs.irPath, *measured, inputs.backend,
                         inputs.promptsPath, inputs.annotatePath);
}

Error kvprec::calib::annotateQuality(StringRef irPath,
                                     const QualityMeasurement &measurement,
                                     BackendKind backend, StringRef promptsPath,
                                     StringRef outPath) {
  const QualityTotals &whole = measurement.whole;
  // The planned module again, with the measurement on its planned alloc.
  return withPlannedCache(
      irPath,
      [&](mlir::kvprec::AllocOp alloc, const PlannedCacheType &,
          const std::string &) -> Error {
        mlir::Builder b(alloc->getContext());
        double n = double(std::max<int64_t>(whole.promptPositions, 1));
        SmallVector<mlir::NamedAttribute> entries{
            b.getNamedAttr("backend",
                           b.getStringAttr(backend == BackendKind::Compiled
                                               ? "compiled"
                                               : "emulated")),
            b.getNamedAttr("prompts", b.getStringAttr(promptsPath)),
            b.getNamedAttr("tokens", b.getI64IntegerAttr(whole.positions)),
            b.getNamedAttr("mean_kl", b.getF64FloatAttr(whole.getMeanKL())),
            b.getNamedAttr("max_kl", b.getF64FloatAttr(whole.maxKL)),
            b.getNamedAttr("top1_agreement",
                           b.getF64FloatAttr(whole.getTop1Agreement())),
            b.getNamedAttr("ppl_fp32",
                           b.getF64FloatAttr(std::exp(whole.nllExact / n))),
            b.getNamedAttr("ppl_plan",
                           b.getF64FloatAttr(std::exp(whole.nllPlan / n)))};
        alloc->setAttr("kvprec.quality", b.getDictionaryAttr(entries));
        std::error_code ec;
        raw_fd_ostream out(outPath, ec);
        if (ec)
          return makeError(outPath + ": cannot write: " + ec.message());
        alloc->getParentOfType<mlir::ModuleOp>().print(out);
        return Error::success();
      });
}
