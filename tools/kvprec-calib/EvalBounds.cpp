//===- EvalBounds.cpp - kvprec-calib eval-bounds --------------------------===//

#include "EvalBounds.h"
#include "Backends.h"
#include "kvprec/Calibration/InputFile.h"
#include "kvprec/Runtime/CompiledCache.h"

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Calibration/Generation.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Certify/PlanEmulation.h"
#include "kvprec/Certify/ReferenceCertifier.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/Dialect/KVPrec/Transforms/CalibrationIR.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"
#include "kvprec/InitKVPrec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Parser/Parser.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>

using namespace llvm;
using namespace kvprec;
using namespace kvprec::calib;
namespace an = kvprec::analysis;
namespace cf = kvprec::certify;

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

//===----------------------------------------------------------------------===//
// Reading the planned module
//===----------------------------------------------------------------------===//

namespace {
/// What eval-bounds needs from the module: the first planned cache and the
/// statistics its alloc names.
struct PlannedCache {
  /// The plan, its location, and the cache type (what --backend=compiled
  /// compiles).
  PlannedCacheType cache;
  CalibrationStats stats;
  std::string calibrationName;
  /// The certificate the plan records, if any (its bound is reported, not
  /// trusted; its extrapolation rule is the one evaluated).
  std::optional<mlir::kvprec::CertificateRecord> stored;
};
} // namespace

static Expected<PlannedCache> loadPlannedCache(StringRef path) {
  PlannedCache result;
  Error error = withPlannedCache(
      path,
      [&](mlir::kvprec::AllocOp planned, const PlannedCacheType &cache,
          const std::string &diagnostics) -> Error {
        result.cache = cache;
        const std::string &where = cache.location;
        if (mlir::kvprec::CertificateAttr certificate =
                planned.getCache().getType().getPlan().getCertificate())
          result.stored = mlir::kvprec::readCertificateAttr(certificate);
        if (!planned.getCalibration())
          return makeError(where +
                           ": the planned kvprec.alloc has no calibration (run "
                           "--kvprec-import-calibration before "
                           "--kvprec-assign-precision)");
        result.calibrationName = planned.getCalibrationAttr().getValue().str();
        auto calibration = mlir::SymbolTable::lookupNearestSymbolFrom<
            mlir::kvprec::CalibrationOp>(planned, planned.getCalibrationAttr());
        if (!calibration)
          return makeError(where + ": calibration @" + result.calibrationName +
                           " does not name a kvprec.calibration op");
        mlir::FailureOr<CalibrationStats> stats =
            mlir::kvprec::readCalibrationOp(calibration);
        if (mlir::failed(stats))
          return makeError(diagnostics.empty()
                               ? where + ": cannot read calibration @" +
                                     result.calibrationName
                               : diagnostics);
        result.stats = std::move(*stats);
        return Error::success();
      });
  if (error)
    return std::move(error);
  return std::move(result);
}

/// "K sink f16, window f16, body int8<...>; V ..." with "xN" counts where
/// items differ.
static std::string describePlan(const cf::Plan &plan) {
  const cf::Geometry &g = plan.geometry;
  std::string text = formatv("capacity {0}, sink {1}, window {2}, block {3}",
                             g.capacity, g.sink, g.window, g.block)
                         .str();
  if (plan.perBlock)
    text += ", per-block body";
  int64_t blocks = g.getNumBodyBlocks();
  for (int kv = 0; kv < 2; ++kv) {
    text += kv == 0 ? "; K" : "; V";
    for (int segment = 0; segment < cf::kNumSegments; ++segment) {
      // Format names in first-use order, with their counts.
      std::vector<std::pair<std::string, int64_t>> counts;
      auto count = [&](const an::StorageFormat &format) {
        std::string name = an::getFormatName(format);
        auto it = llvm::find_if(counts,
                                [&](const auto &c) { return c.first == name; });
        if (it == counts.end())
          counts.push_back({name, 1});
        else
          ++it->second;
      };
      for (int64_t layer = 0; layer < g.layers; ++layer)
        for (int64_t head = 0; head < g.heads; ++head) {
          int64_t item = plan.getItem(layer, head, kv);
          if (segment == cf::kSink)
            count(plan.getSink(item));
          else if (segment == cf::kWindow)
            count(plan.getWindow(item));
          else
            for (int64_t b = 0; b < (plan.perBlock ? blocks : 1); ++b)
              count(plan.getBody(item, b));
        }
      text +=
          std::string(segment == 0 ? " " : ", ") + cf::getSegmentName(segment);
      for (auto &[name, count] : counts) {
        text += " " + name;
        if (counts.size() > 1)
          text += "x" + std::to_string(count);
      }
    }
  }
  return text;
}

//===----------------------------------------------------------------------===//
// The evaluation
//===----------------------------------------------------------------------===//

namespace {
/// Per (layer, KV head) results.
struct HeadSummary {
  double bound = 0.0;
  /// The same certificate from the position-by-position certifier.
  double referenceBound = 0.0;
  double keyLogitError = 0.0;
  int64_t cases = 0, violations = 0, runtimeViolations = 0;
  double maxError = 0.0, maxRatio = 0.0, maxRuntimeBound = 0.0;
};

/// Observes the fp32 forward pass: appends each layer's K and V to the
/// emulated caches and measures every query head's attention error.
class BoundEvaluator : public AttentionObserver {
public:
  BoundEvaluator(const cf::Plan &plan, const LlamaConfig &config,
                 std::vector<HeadSummary> &heads, raw_ostream *casesOut)
      : plan(plan), config(config), heads(heads), casesOut(casesOut) {}

  void startSequence(int64_t prompt) {
    this->prompt = prompt;
    streams.clear();
    for (int64_t item = 0; item < plan.getNumItems(); ++item)
      streams.emplace_back(plan, item, an::DequantizerConfig());
    if (compiled && compiled->init(arena->data, arena->size) != 0)
      status = an::Status::failure("the compiled cache's init failed");
  }

  /// --backend=compiled: the generated code stores the same K and V and
  /// computes attention; its output is compared with the emulated one and
  /// measured against both certificates.
  void useCompiled(const runtime::CompiledCache *code) {
    compiled = code;
    arena = std::make_unique<runtime::Arena>(code->getArenaBytes());
  }
  double maxBackendDiff = 0.0, compiledMaxError = 0.0,
         maxCompiledRuntimeBound = 0.0;
  int64_t compiledViolations = 0, compiledRuntimeViolations = 0;
  int64_t generatedViolations = 0, generatedRatios = 0;
  double maxGeneratedBound = 0.0, sumGeneratedOverRefined = 0.0;

  void observe(const AttentionStep &step) override;

  /// A probabilistic plan's levels: its run-time certificate is the §9 one.
  std::optional<an::ConcentrationLevels> levels;

  /// The first failure (quantizer or certificate), if any.
  const an::Status &getStatus() const { return status; }
  void collectStreamCounters() {
    for (const cf::EmulatedStream &stream : streams) {
      elementBoundViolations += stream.getElementBoundViolations();
      demotions += stream.getNumDemotions();
    }
  }

  std::vector<double> ratios, runtimeRatios;
  /// Static bound / run-time bound per case: how much the envelopes cost
  /// against knowing the query.
  std::vector<double> staticOverRuntime;
  int64_t cases = 0, violations = 0, runtimeViolations = 0;
  /// The same for positions at or past the calibrated length.
  int64_t calibratedLength = std::numeric_limits<int64_t>::max();
  int64_t beyondCases = 0, beyondViolations = 0, beyondRuntimeViolations = 0;
  double beyondMaxRatio = 0.0, beyondMaxError = 0.0;
  double maxError = 0.0, maxRatio = 0.0, maxRuntimeRatio = 0.0,
         maxRuntimeBound = 0.0;
  uint64_t elementBoundViolations = 0, demotions = 0;

private:
  const cf::Plan &plan;
  const LlamaConfig &config;
  std::vector<HeadSummary> &heads;
  raw_ostream *casesOut;
  int64_t prompt = 0;
  std::vector<cf::EmulatedStream> streams;
  std::vector<long double> exactWeights, storedWeights;
  an::Status status = an::Status::success();
  const runtime::CompiledCache *compiled = nullptr;
  std::unique_ptr<runtime::Arena> arena;
  std::vector<float> compiledOutput;
  /// The run-time certificate the generated code computed, per query head.
  std::vector<float> generatedBounds;
};
} // namespace

/// Softmax of q.K_t / sqrt(d) over the rows of `keys`, in long double.
static void computeWeights(const std::vector<double> &query,
                           const an::Matrix &keys,
                           std::vector<long double> &weights) {
  const size_t positions = keys.rows, headDim = keys.cols;
  const long double scale = 1.0L / std::sqrt((long double)headDim);
  weights.resize(positions);
  long double maxLogit = -std::numeric_limits<long double>::infinity();
  for (size_t t = 0; t < positions; ++t) {
    long double dot = 0.0L;
    for (size_t j = 0; j < headDim; ++j)
      dot += (long double)query[j] * keys(t, j);
    weights[t] = dot * scale;
    maxLogit = std::max(maxLogit, weights[t]);
  }
  long double sum = 0.0L;
  for (long double &w : weights) {
    w = std::exp(w - maxLogit);
    sum += w;
  }
  for (long double &w : weights)
    w /= sum;
}

/// The rounding of the long double measurement itself: the weights carry a
/// relative error of a few units of LDBL_EPSILON (dot product, exp, sum,
/// division), which moves the difference of two outputs by up to that
/// times the values. Below it, an error and a bound cannot be told apart
/// (it only matters for bounds near 1e-19, of caches stored almost
/// exactly).
static double measurementSlack(const an::Matrix &values) {
  double largest = 0.0;
  for (double v : values.values)
    largest = std::max(largest, std::fabs(v));
  return 64.0 * double(LDBL_EPSILON) * (1.0 + largest);
}

/// The measured error max_j |o^_j - o_j| of exact attention over the
/// emulated cache (o^) against the fp32 one (o), same query, scale
/// 1/sqrt(d). It is formed term by term in long double,
///   o^ - o = sum_t (a^_t - a_t) V_t + sum_t a^_t (V^_t - V_t),
/// so its rounding error is relative to the error itself: subtracting two
/// outputs computed in double leaves noise of about 1e-16 |o|, which exceeds
/// the true error (and a sound certificate) when the stored data is nearly
/// exact. Where K^ = K the weights are computed identically and cancel.
static double measureAttentionError(const std::vector<double> &query,
                                    const cf::EmulatedStream &keys,
                                    const cf::EmulatedStream &values,
                                    std::vector<long double> &exactWeights,
                                    std::vector<long double> &storedWeights) {
  computeWeights(query, keys.getExact(), exactWeights);
  computeWeights(query, keys.getStored(), storedWeights);
  const an::Matrix &exact = values.getExact(), &stored = values.getStored();
  double result = 0.0;
  for (size_t j = 0; j < exact.cols; ++j) {
    long double difference = 0.0L;
    for (size_t t = 0; t < exact.rows; ++t)
      difference +=
          (storedWeights[t] - exactWeights[t]) * exact(t, j) +
          storedWeights[t] * ((long double)stored(t, j) - exact(t, j));
    result = std::max(result, (double)std::fabs(difference));
  }
  return result;
}

void BoundEvaluator::observe(const AttentionStep &step) {
  if (status.failed())
    return;
  const int64_t kvHeads = config.numKVHeads, headDim = config.getHeadSize();
  const int64_t group = config.getQueryHeadsPerKVHead();
  for (int64_t h = 0; h < kvHeads; ++h)
    for (int kv = 0; kv < 2; ++kv) {
      cf::EmulatedStream &stream = streams[plan.getItem(step.layer, h, kv)];
      if (stream.getLength() != step.position) {
        status = an::Status::failure("internal error: position " +
                                     std::to_string(step.position) +
                                     " arrived out of order");
        return;
      }
      llvm::ArrayRef<float> source = kv == 0 ? step.key : step.value;
      if (an::Status s = stream.append(source.data() + h * headDim);
          s.failed()) {
        status = an::Status::failure(formatv("layer {0}, KV head {1}, {2}: {3}",
                                             step.layer, h, kv == 0 ? "K" : "V",
                                             s.getMessage())
                                         .str());
        return;
      }
    }

  if (compiled) {
    compiledOutput.resize(config.numHeads * headDim);
    generatedBounds.resize(config.numHeads);
    int32_t appended =
        compiled->append(arena->data, arena->size, step.layer, step.key.data(),
                         step.value.data(), 1, step.position);
    int32_t attended = appended ? appended
                                : compiled->attendCertified(
                                      arena->data, arena->size, step.layer,
                                      step.queries.data(), config.numHeads,
                                      step.position + 1, compiledOutput.data(),
                                      float(1.0 / std::sqrt(double(headDim))),
                                      generatedBounds.data());
    if (attended != 0) {
      status = an::Status::failure(
          formatv("layer {0}, position {1}: the compiled cache returned "
                  "status {2} (docs/abi.md)",
                  step.layer, step.position, attended)
              .str());
      return;
    }
  }

  std::vector<double> query(headDim);
  for (int64_t qh = 0; qh < config.numHeads; ++qh) {
    int64_t h = qh / group;
    const cf::EmulatedStream &keys = streams[plan.getItem(step.layer, h, 0)];
    const cf::EmulatedStream &values = streams[plan.getItem(step.layer, h, 1)];
    for (int64_t j = 0; j < headDim; ++j)
      query[j] = step.queries[qh * headDim + j];
    double error =
        measureAttentionError(query, keys, values, exactWeights, storedWeights);
    an::RuntimeCertificate runtime;
    if (an::Status s = an::computeRuntimeCertificate(
            query, keys.getStored(), values.getStored(), keys.getErrorBounds(),
            values.getErrorBounds(), runtime, levels ? &*levels : nullptr);
        s.failed()) {
      status = an::Status::failure(
          formatv("run-time certificate of layer {0}, query head {1}: {2}",
                  step.layer, qh, s.getMessage())
              .str());
      return;
    }

    HeadSummary &head = heads[step.layer * kvHeads + h];
    double bound = head.bound;
    double slack = measurementSlack(values.getExact());
    if (compiled) {
      // The emulated output (exact attention over the stored values) and
      // the exact fp32 one, against what the generated code computed.
      const an::Matrix &exact = values.getExact(), &stored = values.getStored();
      double diff = 0.0, compiledError = 0.0;
      for (int64_t j = 0; j < headDim; ++j) {
        long double emulated = 0.0L, reference = 0.0L;
        for (size_t t = 0; t < exact.rows; ++t) {
          emulated += storedWeights[t] * stored(t, j);
          reference += exactWeights[t] * exact(t, j);
        }
        long double got = compiledOutput[qh * headDim + j];
        diff = std::max(diff, double(std::fabs(got - emulated)));
        compiledError =
            std::max(compiledError, double(std::fabs(got - reference)));
      }
      maxBackendDiff = std::max(maxBackendDiff, diff);
      compiledMaxError = std::max(compiledMaxError, compiledError);
      // The static certificate includes the kernel's f32 arithmetic; the
      // run-time one bounds storage only, so the compiled output is held to
      // it plus the kernel-rounding bound of this query (Bound.h), with one
      // rescale per weight (the tiles' combine).
      an::KernelRoundingModel kernelModel;
      kernelModel.numRescales = 1;
      an::KernelRoundingBound kernel;
      if (an::Status s = an::computeKernelRoundingBound(
              query, keys.getStored(), values.getStored(), kernelModel, kernel);
          s.failed()) {
        status = an::Status::failure(s.getMessage());
        return;
      }
      compiledViolations += compiledError > bound + slack;
      compiledRuntimeViolations +=
          compiledError > runtime.infNorm + kernel.infNorm + slack;
      maxCompiledRuntimeBound =
          std::max(maxCompiledRuntimeBound, runtime.infNorm + kernel.infNorm);
      // The generated code's own run-time certificate (P_attend_certified).
      double generated = generatedBounds[qh];
      generatedViolations += compiledError > generated + slack;
      maxGeneratedBound = std::max(maxGeneratedBound, generated);
      double refined = runtime.infNorm + kernel.infNorm;
      if (refined > 0.0) {
        sumGeneratedOverRefined += generated / refined;
        ++generatedRatios;
      }
    }
    bool violated = error > bound + slack;
    bool runtimeViolated = error > runtime.infNorm + slack;
    // Ratios against the bound plus the measurement's rounding: above 1
    // exactly for the violations.
    double ratio = bound > 0.0 ? error / (bound + slack) : 0.0;
    double runtimeRatio =
        runtime.infNorm > 0.0 ? error / (runtime.infNorm + slack) : 0.0;
    ++cases;
    violations += violated;
    runtimeViolations += runtimeViolated;
    maxError = std::max(maxError, error);
    maxRuntimeBound = std::max(maxRuntimeBound, runtime.infNorm);
    if (bound > 0.0) {
      ratios.push_back(ratio);
      maxRatio = std::max(maxRatio, ratio);
    }
    if (runtime.infNorm > 0.0 && std::isfinite(bound))
      staticOverRuntime.push_back(bound / runtime.infNorm);
    if (runtime.infNorm > 0.0) {
      runtimeRatios.push_back(runtimeRatio);
      maxRuntimeRatio = std::max(maxRuntimeRatio, runtimeRatio);
    }
    if (step.position >= calibratedLength) {
      ++beyondCases;
      beyondViolations += violated;
      beyondRuntimeViolations += runtimeViolated;
      beyondMaxRatio = std::max(beyondMaxRatio, ratio);
      beyondMaxError = std::max(beyondMaxError, error);
    }
    ++head.cases;
    head.violations += violated;
    head.runtimeViolations += runtimeViolated;
    head.maxError = std::max(head.maxError, error);
    head.maxRatio = std::max(head.maxRatio, ratio);
    head.maxRuntimeBound = std::max(head.maxRuntimeBound, runtime.infNorm);

    if (casesOut)
      *casesOut << formatv("{{\"prompt\": {0}, \"position\": {1}, \"layer\": "
                           "{2}, \"q_head\": {3}, \"kv_head\": {4}, ",
                           prompt, step.position, step.layer, qh, h)
                << format("\"error\": %.17g, \"bound\": %.17g, "
                          "\"runtime_bound\": %.17g}\n",
                          error, bound, runtime.infNorm);
  }
}

/// The median of `values` (0 when empty); reorders them.
static double median(std::vector<double> &values) {
  if (values.empty())
    return 0.0;
  size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  double upper = values[mid];
  if (values.size() % 2 == 1)
    return upper;
  double lower = *std::max_element(values.begin(), values.begin() + mid);
  return 0.5 * (lower + upper);
}

/// JSON has no infinities: write them as null.
static json::Value number(double value) {
  if (std::isfinite(value))
    return value;
  return nullptr;
}

Error kvprec::calib::runEvalBounds(const EvalBoundsInputs &inputs,
                                   raw_ostream &os) {
  Expected<PlannedCache> loaded = loadPlannedCache(inputs.irPath);
  if (!loaded)
    return loaded.takeError();
  const cf::Plan &plan = loaded->cache.plan;
  const cf::Geometry &g = plan.geometry;
  const CalibrationStats &stats = loaded->stats;
  const std::string &where = loaded->cache.location;
  const LlamaConfig &config = inputs.model->getConfig();

  // The plan must describe this checkpoint's caches, and its calibration
  // this plan.
  auto mismatch = [&](StringRef what, int64_t planned, int64_t model) {
    return makeError(formatv("{0}: the plan's cache has {1} {2} but the "
                             "checkpoint {3} has {4}",
                             where, planned, what, inputs.checkpointPath,
                             model));
  };
  if (g.layers != config.numLayers)
    return mismatch("layers", g.layers, config.numLayers);
  if (g.heads != config.numKVHeads)
    return mismatch("KV heads", g.heads, config.numKVHeads);
  if (g.headDim != config.getHeadSize())
    return mismatch("channels per head (head_dim)", g.headDim,
                    config.getHeadSize());
  // The model's attention scales by 1/sqrt(head_dim); the plan is
  // evaluated under the extrapolation rule its certificate states.
  cf::CertifyOptions options;
  options.softmaxScale = 1.0 / std::sqrt(double(g.headDim));
  if (loaded->stored && loaded->stored->extrapolated) {
    options.extrapolation = cf::Extrapolation::WorstCase;
    options.extrapolationMargin = loaded->stored->margin;
  }
  // A probabilistic plan is evaluated as the certificate it states (both
  // its static and its run-time bounds).
  bool probabilistic = loaded->stored && loaded->stored->probabilistic;
  if (probabilistic) {
    options.certificate = cf::CertificateKind::Probabilistic;
    options.failureProbability = loaded->stored->confidence;
  }
  std::string problem = cf::checkCoverage(stats, g, options);
  if (!problem.empty())
    return makeError(where + ": calibration @" + loaded->calibrationName +
                     ": " + problem);
  if (stats.shape.qHeads != config.numHeads)
    return makeError(formatv("{0}: calibration @{1} was measured with {2} "
                             "query heads but the checkpoint {3} has {4}",
                             where, loaded->calibrationName, stats.shape.qHeads,
                             inputs.checkpointPath, config.numHeads));

  // Every prompt's positions must fit the planned cache.
  std::vector<std::vector<int>> promptTokens;
  int64_t maxPositions = 0;
  for (size_t i = 0; i < inputs.prompts.size(); ++i) {
    Expected<std::vector<int>> tokens = inputs.tokenizer->encode(
        inputs.prompts[i], /*addBOS=*/true, /*addEOS=*/false, config.seqLen);
    if (!tokens)
      return tokens.takeError();
    int64_t needed =
        std::min<int64_t>(tokens->size() + inputs.steps, config.seqLen);
    if (needed > g.capacity)
      return makeError(formatv(
          "{0}: the plan's cache holds {1} positions but prompt {2} of {3} "
          "needs {4} ({5} tokens with BOS, then {6} steps)",
          where, g.capacity, i + 1, inputs.promptsPath, needed, tokens->size(),
          inputs.steps));
    maxPositions = std::max(maxPositions, needed);
    promptTokens.push_back(std::move(*tokens));
  }

  // The certified bound of every (layer, KV head), recomputed from the
  // calibration (any bound stored in the plan is not trusted).
  std::vector<HeadSummary> heads(g.layers * g.heads);
  double maxBound = 0.0, maxCertifierGap = 0.0;
  for (int64_t layer = 0; layer < g.layers; ++layer)
    for (int64_t head = 0; head < g.heads; ++head) {
      an::StaticCertifiedBound bound;
      HeadSummary &summary = heads[layer * g.heads + head];
      if (an::Status status = cf::certifyPlanHead(
              stats, plan, layer, head, options, bound, summary.keyLogitError);
          status.failed())
        return makeError(formatv("{0}: cannot certify layer {1}, KV head {2}: "
                                 "{3}",
                                 where, layer, head, status.getMessage()));
      summary.bound = bound.infNorm;
      maxBound = std::max(maxBound, bound.infNorm);
      if (an::Status status = cf::certifyHeadByPosition(
              stats, plan, layer, head, options, summary.referenceBound);
          status.failed())
        return makeError(formatv("{0}: cannot certify layer {1}, KV head {2} "
                                 "position by position: {3}",
                                 where, layer, head, status.getMessage()));
      if (std::isfinite(bound.infNorm) && bound.infNorm > 0)
        maxCertifierGap = std::max(
            maxCertifierGap,
            std::fabs(bound.infNorm - summary.referenceBound) / bound.infNorm);
    }

  std::unique_ptr<raw_fd_ostream> casesOut;
  if (!inputs.casesPath.empty()) {
    std::error_code ec;
    casesOut = std::make_unique<raw_fd_ostream>(inputs.casesPath, ec,
                                                sys::fs::OF_Text);
    if (ec)
      return createStringError(ec, inputs.casesPath +
                                       ": cannot write: " + ec.message());
  }

  // Teacher-forced on the model's own fp32 greedy continuation: the
  // emulated caches only measure, they never feed back into the model.
  BoundEvaluator evaluator(plan, config, heads, casesOut.get());
  std::unique_ptr<runtime::CompiledCache> compiled;
  if (inputs.compiled) {
    if (!loaded->cache.f32Elements)
      return makeError(where +
                       ": the compiled backend needs a cache of f32 elements");
    auto code =
        runtime::CompiledCache::compile(loaded->cache.typeText, /*threads=*/1,
                                        /*runtimeCertificate=*/true);
    if (!code)
      return makeError(
          where + ": cannot compile the cache: " + toString(code.takeError()));
    compiled = std::move(*code);
    evaluator.useCompiled(compiled.get());
  }
  evaluator.calibratedLength = stats.shape.maxPositions;
  if (probabilistic)
    evaluator.levels = cf::getConcentrationLevels(options.failureProbability,
                                                  g.layers * config.numHeads,
                                                  g.capacity, g.headDim);
  LlamaRunner runner(*inputs.model);
  Sampler sampler(/*temperature=*/0.0f, /*seed=*/0);
  GenerationOptions generation;
  generation.steps = inputs.steps;
  generation.runLastToken = true; // generated tokens are queries too
  int64_t positionsRun = 0;
  for (size_t i = 0; i < promptTokens.size(); ++i) {
    evaluator.startSequence(static_cast<int64_t>(i));
    Expected<GenerationResult> result =
        generate(runner, promptTokens[i], sampler, generation, &evaluator);
    if (!result)
      return makeError(inputs.promptsPath + ": prompt " + Twine(i + 1) + ": " +
                       toString(result.takeError()));
    if (evaluator.getStatus().failed())
      return makeError(where + ": prompt " + Twine(i + 1) + ": " +
                       evaluator.getStatus().getMessage());
    evaluator.collectStreamCounters();
    positionsRun += result->positionsRun;
  }
  if (casesOut) {
    casesOut->close();
    if (casesOut->has_error())
      return makeError(inputs.casesPath + ": write failed");
  }

  double fp16Bytes =
      double(g.layers) * g.heads * 2 * g.capacity * g.headDim * 2;
  double medianRatio = median(evaluator.ratios);
  double medianRuntimeRatio = median(evaluator.runtimeRatios);
  double maxStaticOverRuntime =
      evaluator.staticOverRuntime.empty()
          ? 0.0
          : *std::max_element(evaluator.staticOverRuntime.begin(),
                              evaluator.staticOverRuntime.end());
  double medianStaticOverRuntime = median(evaluator.staticOverRuntime);

  json::OStream json(os, 2);
  json.object([&] {
    json.attribute("certificate",
                   probabilistic ? "probabilistic" : "deterministic");
    if (probabilistic)
      json.attribute("confidence", number(options.failureProbability));
    json.attribute("violations", evaluator.violations);
    json.attribute("cases", evaluator.cases);
    json.attribute("max_ratio", number(evaluator.maxRatio));
    json.attribute("median_ratio", number(medianRatio));
    json.attribute("bytes_ratio", number(plan.getTotalBytes() / fp16Bytes));
    json.attribute("runtime_violations", evaluator.runtimeViolations);
    json.attribute("max_runtime_ratio", number(evaluator.maxRuntimeRatio));
    json.attribute("median_runtime_ratio", number(medianRuntimeRatio));
    json.attribute("max_error", number(evaluator.maxError));
    json.attribute("max_bound", number(maxBound));
    json.attribute("max_runtime_bound", number(evaluator.maxRuntimeBound));
    json.attribute("median_static_over_runtime",
                   number(medianStaticOverRuntime));
    json.attribute("max_static_over_runtime", number(maxStaticOverRuntime));
    json.attribute("max_certifier_gap", number(maxCertifierGap));
    json.attribute("element_bound_violations",
                   int64_t(evaluator.elementBoundViolations));
    json.attribute("demotions", int64_t(evaluator.demotions));
    if (compiled) {
      // The generated code's attention: its largest difference from the
      // emulated attention over the same stored values, and its own
      // measured error against both certificates.
      json.attribute("backend", "compiled");
      json.attribute("max_backend_diff", number(evaluator.maxBackendDiff));
      json.attribute("compiled_violations", evaluator.compiledViolations);
      json.attribute("compiled_runtime_violations",
                     evaluator.compiledRuntimeViolations);
      json.attribute("compiled_max_error", number(evaluator.compiledMaxError));
      json.attribute("max_compiled_runtime_bound",
                     number(evaluator.maxCompiledRuntimeBound));
      // The certificate the generated code computes in the same pass
      // (P_attend_certified): its violations by the compiled output's
      // measured error, its largest value, and its mean ratio to the
      // refined run-time certificate plus the kernel-rounding bound.
      json.attribute("generated_certificate_violations",
                     evaluator.generatedViolations);
      json.attribute("max_generated_certificate",
                     number(evaluator.maxGeneratedBound));
      json.attribute("mean_generated_over_refined",
                     number(evaluator.generatedRatios
                                ? evaluator.sumGeneratedOverRefined /
                                      double(evaluator.generatedRatios)
                                : 0.0));
    }
    json.attribute("plan", describePlan(plan));
    json.attribute("plan_bytes", number(plan.getTotalBytes()));
    json.attribute("fp16_bytes", number(fp16Bytes));
    if (loaded->stored) {
      json.attributeArray("stored_tolerance", [&] {
        for (double t : loaded->stored->tolerances)
          json.value(number(t));
      });
      json.attribute("stored_bound", number(loaded->stored->bound));
    }
    json.attribute("extrapolated", g.capacity > stats.shape.maxPositions);
    // Cases at positions the calibration never reached: certified only by
    // the stated extrapolation rule, so reported apart.
    json.attributeObject("beyond_calibration", [&] {
      json.attribute("from_position", stats.shape.maxPositions);
      json.attribute("cases", evaluator.beyondCases);
      json.attribute("violations", evaluator.beyondViolations);
      json.attribute("runtime_violations", evaluator.beyondRuntimeViolations);
      json.attribute("max_ratio", number(evaluator.beyondMaxRatio));
      json.attribute("max_error", number(evaluator.beyondMaxError));
    });
    json.attribute("model", inputs.model->getName());
    json.attribute("calibration_model", stats.model);
    json.attribute("calibration_synthetic", stats.synthetic);
    json.attribute("calibration_positions", stats.shape.maxPositions);
    json.attribute("prompts", int64_t(inputs.prompts.size()));
    json.attribute("steps", int64_t(inputs.steps));
    json.attribute("positions", positionsRun);
    json.attribute("max_positions", maxPositions);
    json.attributeArray("heads", [&] {
      for (int64_t layer = 0; layer < g.layers; ++layer)
        for (int64_t head = 0; head < g.heads; ++head) {
          const HeadSummary &s = heads[layer * g.heads + head];
          json.object([&] {
            json.attribute("layer", layer);
            json.attribute("kv_head", head);
            json.attribute("bound", number(s.bound));
            json.attribute("reference_bound", number(s.referenceBound));
            json.attribute("key_logit_error", number(s.keyLogitError));
            json.attribute("cases", s.cases);
            json.attribute("violations", s.violations);
            json.attribute("runtime_violations", s.runtimeViolations);
            json.attribute("max_error", number(s.maxError));
            json.attribute("max_ratio", number(s.maxRatio));
            json.attribute("max_runtime_bound", number(s.maxRuntimeBound));
          });
        }
    });
  });
  os << "\n";
  return Error::success();
}
