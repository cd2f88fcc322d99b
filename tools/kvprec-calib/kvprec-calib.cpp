//===- kvprec-calib.cpp - Calibration statistics for kvprec ---------------===//
//
// kvprec-calib generate  run a llama2.c checkpoint (fp32 reference forward)
// kvprec-calib collect   measure kvprec-calib-v1 statistics on prompts
// kvprec-calib synth     write SYNTHETIC statistics for a model shape
// kvprec-calib inspect   validate a statistics file and print its contents
// kvprec-calib eval-bounds
//                        check a planned module's certified bounds against
//                        measured attention errors (EvalBounds.h)
//
// See docs/calibration.md.
//
//===----------------------------------------------------------------------===//

#include "Backends.h"
#include "EvalBounds.h"
#include "EvalQuality.h"
#include "PlanBudget.h"
#include "kvprec/Calibration/InputFile.h"
#include "kvprec/CommandLine.h"

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Calibration/Collector.h"
#include "kvprec/Calibration/DecodeStepIR.h"
#include "kvprec/Calibration/DownstreamSensitivity.h"
#include "kvprec/Calibration/Generation.h"
#include "kvprec/Calibration/HFTokenizer.h"
#include "kvprec/Calibration/Model.h"
#include "kvprec/Calibration/SafeTensors.h"
#include "kvprec/Calibration/Synthetic.h"
#include "kvprec/Calibration/Tokenizer.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

using namespace llvm;
using namespace kvprec::calib;

//===----------------------------------------------------------------------===//
// Command line
//===----------------------------------------------------------------------===//

static cl::SubCommand
    generateCommand("generate",
                    "Generate text from a model (llama2.c checkpoint or "
                    "Hugging Face directory) with the fp32 reference forward "
                    "pass");
static cl::SubCommand
    collectCommand("collect",
                   "Measure kvprec-calib-v1 calibration statistics on a model "
                   "over a file of prompts");
static cl::SubCommand
    tokenizeCommand("tokenize",
                    "Print the token ids of a text (space-separated)");
static cl::SubCommand
    synthCommand("synth",
                 "Write SYNTHETIC kvprec-calib-v1 statistics for a model shape "
                 "(generated with realistic structure, not measured)");
static cl::SubCommand
    inspectCommand("inspect",
                   "Validate a kvprec-calib-v1 file and print its metadata, "
                   "tensor shapes and value ranges");

static cl::SubCommand evalQualityCommand(
    "eval-quality",
    "Measure what a planned cache does to the model's next-token "
    "distributions: KL divergence, top-1 agreement and perplexity against "
    "the fp32 cache, overall and per layer");
static cl::SubCommand planBudgetCommand(
    "plan-budget",
    "Plan a byte budget with the certified allocator at several logit "
    "error caps and keep, of the plans whose KL measured on the prompts "
    "cannot be told from the lowest, the one with the lowest certified "
    "bound");
static cl::SubCommand evalBoundsCommand(
    "eval-bounds",
    "Check the certified bounds of a planned module against the measured "
    "attention errors of a cache stored exactly as the plan says");

static cl::OptionCategory modelCategory("Model options");
static cl::OptionCategory toolCategory("kvprec-calib options");

static cl::opt<std::string>
    checkpointPath("checkpoint", cl::desc("llama2.c checkpoint (.bin)"),
                   cl::value_desc("file"), cl::sub(generateCommand),
                   cl::sub(collectCommand), cl::sub(evalBoundsCommand),
                   cl::sub(tokenizeCommand), cl::sub(evalQualityCommand),
                   cl::sub(planBudgetCommand), cl::cat(modelCategory));
static cl::opt<std::string>
    tokenizerPath("tokenizer", cl::desc("llama2.c tokenizer (.bin)"),
                  cl::value_desc("file"), cl::sub(generateCommand),
                  cl::sub(collectCommand), cl::sub(evalBoundsCommand),
                  cl::sub(tokenizeCommand), cl::sub(evalQualityCommand),
                  cl::sub(planBudgetCommand), cl::cat(modelCategory));
static cl::opt<std::string> modelDirectory(
    "model",
    cl::desc("Hugging Face model directory (config.json, model.safetensors "
             "or its index, tokenizer.json), instead of --checkpoint and "
             "--tokenizer"),
    cl::value_desc("dir"), cl::sub(generateCommand), cl::sub(collectCommand),
    cl::sub(evalBoundsCommand), cl::sub(tokenizeCommand),
    cl::sub(evalQualityCommand), cl::sub(planBudgetCommand),
    cl::cat(modelCategory));

// tokenize
static cl::opt<std::string> tokenizeText("text", cl::desc("The text"),
                                         cl::sub(tokenizeCommand),
                                         cl::cat(toolCategory));
static cl::opt<bool> tokenizeBOS("bos", cl::desc("Start with the BOS token"),
                                 cl::sub(tokenizeCommand),
                                 cl::cat(toolCategory));

// generate
static cl::opt<int> generateSteps(
    "steps", cl::desc("Tokens to generate after the prompt (default 256)"),
    cl::init(256), cl::sub(generateCommand), cl::cat(toolCategory));
static cl::opt<std::string>
    promptText("prompt", cl::desc("Prompt text (default: start from BOS)"),
               cl::init(""), cl::sub(generateCommand), cl::cat(toolCategory));
static cl::opt<bool> greedy("greedy",
                            cl::desc("Pick the most likely token (argmax)"),
                            cl::sub(generateCommand), cl::cat(toolCategory));
static cl::opt<bool>
    printIds("print-ids",
             cl::desc("Print token ids (space-separated, starting with BOS=1) "
                      "instead of text"),
             cl::sub(generateCommand), cl::cat(toolCategory));
static cl::opt<double>
    temperature("temperature",
                cl::desc("Sampling temperature; 0 means greedy (default 1.0)"),
                cl::init(1.0), cl::sub(generateCommand), cl::cat(toolCategory));
static cl::opt<unsigned long long>
    sampleSeed("seed", cl::desc("Seed of the sampling PRNG (default 42)"),
               cl::init(42), cl::sub(generateCommand), cl::cat(toolCategory));

static cl::opt<std::string> generateIrPath(
    "ir",
    cl::desc("Store K and V as the module's first planned cache says and "
             "attend over what it stores, instead of the fp32 cache"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(toolCategory));
static cl::opt<BackendKind> generateBackend(
    "backend", cl::desc("How --ir's cache runs (default emulated)"),
    cl::values(clEnumValN(BackendKind::Emulated, "emulated",
                          "the plan emulator (kvprec/Certify/PlanEmulation.h)"),
               clEnumValN(BackendKind::Compiled, "compiled",
                          "the code kvprec-to-llvm generates, JIT-compiled")),
    cl::init(BackendKind::Emulated), cl::sub(generateCommand),
    cl::sub(evalBoundsCommand), cl::sub(evalQualityCommand),
    cl::sub(planBudgetCommand), cl::cat(toolCategory));

// collect
static cl::opt<std::string>
    promptsPath("prompts",
                cl::desc("Prompts, one per line (empty lines are skipped)"),
                cl::value_desc("file"), cl::sub(collectCommand),
                cl::sub(evalBoundsCommand), cl::sub(evalQualityCommand),
                cl::sub(planBudgetCommand), cl::cat(toolCategory));
static cl::opt<int>
    collectSteps("steps",
                 cl::desc("Greedy tokens generated (and run) after each prompt "
                          "(default 32)"),
                 cl::init(32), cl::sub(collectCommand), cl::cat(toolCategory));
static cl::opt<long> collectSink("sink", cl::desc("Sink positions (default 4)"),
                                 cl::init(4), cl::sub(collectCommand),
                                 cl::cat(toolCategory));
static cl::opt<long> collectWindow("window",
                                   cl::desc("Recent window width (default 64)"),
                                   cl::init(64), cl::sub(collectCommand),
                                   cl::cat(toolCategory));
static cl::opt<long> collectBlock("block",
                                  cl::desc("Block size in positions "
                                           "(default 32)"),
                                  cl::init(32), cl::sub(collectCommand),
                                  cl::cat(toolCategory));
static cl::opt<long> collectQuerySamples(
    "query-samples",
    cl::desc("Queries kept per (layer, KV head) for the joint certificate, a "
             "uniform random sample (default 1024; 0 keeps none)"),
    cl::init(1024), cl::sub(collectCommand), cl::cat(toolCategory));
static cl::opt<double> sensitivityError(
    "sensitivity-error",
    cl::desc("Also measure each layer's downstream sensitivity: the mean KL "
             "divergence of the next-token distribution per squared error, "
             "with every attention output of the layer off by +-this much "
             "(random signs); 0 (the default) skips it. Needed by "
             "kvprec-assign-precision{kl=...}"),
    cl::init(0.0), cl::sub(collectCommand), cl::cat(toolCategory));
static cl::opt<std::string> modelName(
    "model-name",
    cl::desc("Model name for the metadata (default: checkpoint file stem)"),
    cl::sub(collectCommand), cl::cat(toolCategory));

// synth
static cl::opt<long> synthLayers("layers", cl::desc("Layers (default 80)"),
                                 cl::init(80), cl::sub(synthCommand),
                                 cl::cat(toolCategory));
static cl::opt<long> synthKVHeads("kv-heads", cl::desc("KV heads (default 8)"),
                                  cl::init(8), cl::sub(synthCommand),
                                  cl::cat(toolCategory));
static cl::opt<long>
    synthQHeads("q-heads",
                cl::desc("Query heads, a multiple of --kv-heads (default 64)"),
                cl::init(64), cl::sub(synthCommand), cl::cat(toolCategory));
static cl::opt<long>
    synthHeadDim("head-dim", cl::desc("Head dimension, even (default 128)"),
                 cl::init(128), cl::sub(synthCommand), cl::cat(toolCategory));
static cl::opt<long> synthCapacity(
    "capacity", cl::desc("Positions described, P (default 131072)"),
    cl::init(131072), cl::sub(synthCommand), cl::cat(toolCategory));
static cl::opt<long>
    synthBlock("block", cl::desc("Block size in positions (default 64)"),
               cl::init(64), cl::sub(synthCommand), cl::cat(toolCategory));
static cl::opt<long> synthSink("sink", cl::desc("Sink positions (default 4)"),
                               cl::init(4), cl::sub(synthCommand),
                               cl::cat(toolCategory));
static cl::opt<long> synthWindow("window",
                                 cl::desc("Recent window width (default 128)"),
                                 cl::init(128), cl::sub(synthCommand),
                                 cl::cat(toolCategory));
static cl::opt<unsigned long long>
    synthSeed("seed", cl::desc("Generator seed (default 1)"), cl::init(1),
              cl::sub(synthCommand), cl::cat(toolCategory));

// collect and synth
static cl::opt<std::string>
    outputPath("out", cl::desc("Statistics file to write (.safetensors)"),
               cl::value_desc("file"), cl::sub(collectCommand),
               cl::sub(synthCommand), cl::cat(toolCategory));
static cl::opt<std::string>
    irPath("ir",
           cl::desc("Also write the kvprec IR of one decode step with the "
                    "model's shapes"),
           cl::value_desc("file"), cl::sub(collectCommand),
           cl::sub(synthCommand), cl::cat(toolCategory));

static cl::opt<int64_t> irCapacity(
    "ir-capacity",
    cl::desc("Cache capacity of the --ir module (default: the positions "
             "calibration observed, which is all a certificate can cover "
             "without an extrapolation rule)"),
    cl::init(0), cl::sub(collectCommand), cl::cat(toolCategory));

// eval-bounds
static cl::opt<int> evalSteps(
    "steps",
    cl::desc("Greedy fp32 tokens generated (and run) after each prompt "
             "(default 32)"),
    cl::init(32), cl::sub(evalBoundsCommand), cl::sub(evalQualityCommand),
    cl::sub(planBudgetCommand), cl::cat(toolCategory));
static cl::opt<std::string> evalIrPath(
    "ir",
    cl::desc("Planned module (kvprec-assign-precision output) whose first "
             "planned kvprec.alloc is evaluated"),
    cl::value_desc("file"), cl::sub(evalBoundsCommand),
    cl::sub(evalQualityCommand), cl::sub(planBudgetCommand),
    cl::cat(toolCategory));
static cl::opt<std::string> dumpLogitsPath(
    "dump-logits",
    cl::desc("Also write both runs' logits at every position (safetensors: "
             "exact, plan [T, vocab]; targets, prompt [T])"),
    cl::value_desc("file"), cl::sub(evalQualityCommand), cl::cat(toolCategory));
static cl::opt<std::string> annotatePath(
    "annotate",
    cl::desc("Also write the planned module with the measurement as a "
             "kvprec.quality dictionary on its planned kvprec.alloc (shown by "
             "kvprec-report)"),
    cl::value_desc("file"), cl::sub(evalQualityCommand), cl::cat(toolCategory));
// plan-budget
static cl::opt<double> planBudgetBytes(
    "budget", cl::desc("Bytes of the whole cache the plan may use"),
    cl::init(0.0), cl::sub(planBudgetCommand), cl::cat(toolCategory));
static cl::list<double> planBudgetCaps(
    "ecaps",
    cl::desc("Logit error caps to plan the budget at (comma-separated; "
             "default 0.25,0.5,1,2,4,8,16,32)"),
    cl::CommaSeparated, cl::sub(planBudgetCommand), cl::cat(toolCategory));
static cl::opt<std::string> planBudgetAssign(
    "assign",
    cl::desc("More kvprec-assign-precision options for every candidate, "
             "space-separated (formats=..., per-block=true, ...)"),
    cl::init(""), cl::sub(planBudgetCommand), cl::cat(toolCategory));
static cl::opt<std::string> planBudgetOut(
    "out",
    cl::desc("Where the chosen plan goes (with its measurement as "
             "kvprec.quality)"),
    cl::value_desc("file"), cl::sub(planBudgetCommand), cl::cat(toolCategory));
static cl::opt<std::string> casesPath(
    "json-cases",
    cl::desc("Also write every case (prompt, position, layer, query head) as "
             "JSON Lines"),
    cl::value_desc("file"), cl::sub(evalBoundsCommand), cl::cat(toolCategory));

// inspect
static cl::opt<std::string> inspectPath(cl::Positional,
                                        cl::desc("<stats.safetensors>"),
                                        cl::sub(inspectCommand),
                                        cl::cat(toolCategory));

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static int reportError(Error error) {
  WithColor::error(errs(), "kvprec-calib")
      << toString(std::move(error)) << "\n";
  return 1;
}

static Error usageError(StringRef command, const Twine &message) {
  return createStringError(inconvertibleErrorCode(),
                           "kvprec-calib " + command + ": " + message);
}

static Error requireOption(StringRef command, const cl::opt<std::string> &opt) {
  if (opt.empty())
    return usageError(command, "--" + opt.ArgStr + " is required");
  return Error::success();
}

struct LoadedModel {
  LlamaModel model;
  std::unique_ptr<TextTokenizer> tokenizer;
};

/// --model DIR, or --checkpoint and --tokenizer.
static Expected<LoadedModel> loadModelAndTokenizer(StringRef command) {
  if (!modelDirectory.empty()) {
    if (!checkpointPath.empty() || !tokenizerPath.empty())
      return usageError(command, "--model replaces --checkpoint and "
                                 "--tokenizer; give one or the other");
    Expected<LlamaModel> model = LlamaModel::loadHuggingFace(modelDirectory);
    if (!model)
      return model.takeError();
    SmallString<256> path(modelDirectory.getValue());
    sys::path::append(path, "tokenizer.json");
    const LlamaConfig &config = model->getConfig();
    Expected<HFTokenizer> tokenizer = HFTokenizer::load(
        path, config.vocabSize, config.bosToken, config.eosToken);
    if (!tokenizer)
      return tokenizer.takeError();
    return LoadedModel{std::move(*model),
                       std::make_unique<HFTokenizer>(std::move(*tokenizer))};
  }
  if (checkpointPath.empty() && tokenizerPath.empty())
    return usageError(command, "give --model DIR (Hugging Face) or "
                               "--checkpoint and --tokenizer (llama2.c)");
  if (Error e = requireOption(command, checkpointPath))
    return std::move(e);
  if (Error e = requireOption(command, tokenizerPath))
    return std::move(e);
  Expected<LlamaModel> model = LlamaModel::load(checkpointPath);
  if (!model)
    return model.takeError();
  Expected<Tokenizer> tokenizer =
      Tokenizer::load(tokenizerPath, model->getConfig().vocabSize);
  if (!tokenizer)
    return tokenizer.takeError();
  return LoadedModel{std::move(*model),
                     std::make_unique<Tokenizer>(std::move(*tokenizer))};
}

//===----------------------------------------------------------------------===//
// tokenize
//===----------------------------------------------------------------------===//

static Error runTokenize() {
  if (tokenizeText.getNumOccurrences() == 0)
    return usageError("tokenize", "--text is required");
  Expected<LoadedModel> loaded = loadModelAndTokenizer("tokenize");
  if (!loaded)
    return loaded.takeError();
  Expected<std::vector<int>> ids =
      loaded->tokenizer->encode(tokenizeText, tokenizeBOS, /*addEOS=*/false);
  if (!ids)
    return ids.takeError();
  interleave(*ids, outs(), " ");
  outs() << "\n";
  return Error::success();
}

//===----------------------------------------------------------------------===//
// generate
//===----------------------------------------------------------------------===//

static Error runGenerate() {
  if (generateSteps < 0)
    return usageError("generate", "--steps must be non-negative");
  if (!(temperature >= 0.0) || !std::isfinite(temperature.getValue()))
    return usageError("generate", "--temperature must be a finite value >= 0");
  Expected<LoadedModel> loaded = loadModelAndTokenizer("generate");
  if (!loaded)
    return loaded.takeError();

  Expected<std::vector<int>> prompt =
      loaded->tokenizer->encode(promptText, /*addBOS=*/true, /*addEOS=*/false,
                                loaded->model.getConfig().seqLen);
  if (!prompt)
    return prompt.takeError();
  Sampler sampler(greedy ? 0.0f : static_cast<float>(temperature.getValue()),
                  sampleSeed);
  LlamaRunner runner(loaded->model);
  if (generateBackend.getNumOccurrences() && generateIrPath.empty())
    return usageError("generate", "--backend needs --ir");
  std::optional<PlannedCacheType> planned;
  std::unique_ptr<AttentionBackend> backend;
  if (!generateIrPath.empty()) {
    Expected<PlannedCacheType> cache = loadPlannedCacheType(generateIrPath);
    if (!cache)
      return cache.takeError();
    planned = std::move(*cache);
    Expected<std::unique_ptr<AttentionBackend>> created =
        createAttentionBackend(generateBackend, *planned,
                               loaded->model.getConfig());
    if (!created)
      return created.takeError();
    backend = std::move(*created);
    runner.setBackend(backend.get());
  }
  GenerationOptions options;
  options.steps = generateSteps;
  Expected<GenerationResult> result =
      generate(runner, *prompt, sampler, options);
  if (!result)
    return result.takeError();

  raw_ostream &os = outs();
  if (printIds) {
    interleave(result->tokens, os, " ");
    os << "\n";
    return Error::success();
  }
  // Print like llama2.c: every piece after the first token, skipping
  // unprintable single bytes.
  const std::vector<int> &tokens = result->tokens;
  for (size_t i = 1; i < tokens.size(); ++i) {
    std::string piece =
        loaded->tokenizer->decodePiece(tokens[i - 1], tokens[i]);
    if (Tokenizer::isPrintable(piece))
      os << piece;
  }
  os << "\n";
  return Error::success();
}

//===----------------------------------------------------------------------===//
// collect
//===----------------------------------------------------------------------===//

static Expected<std::vector<std::string>> readPrompts(StringRef path) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, "prompts", uint64_t(64) << 20, /*isText=*/true);
  if (!buffer)
    return buffer.takeError();
  std::vector<std::string> prompts;
  SmallVector<StringRef> lines;
  (*buffer)->getBuffer().split(lines, '\n');
  for (StringRef line : lines) {
    line = line.rtrim("\r");
    if (line.trim().empty())
      continue;
    prompts.push_back(line.str());
  }
  if (prompts.empty())
    return createStringError(inconvertibleErrorCode(),
                             path + ": no prompts (every line is empty)");
  return prompts;
}

static Error runCollect() {
  if (collectSteps < 0)
    return usageError("collect", "--steps must be non-negative");
  if (collectSink < 0 || collectWindow < 0 || collectBlock < 1)
    return usageError("collect", "--sink and --window must be >= 0 and "
                                 "--block >= 1");
  // The samples take N * (D + M + 1) floats per (layer, KV head).
  if (collectQuerySamples < 0 || collectQuerySamples > (1 << 20))
    return usageError("collect", "--query-samples must be in [0, 1048576]");
  if (Error e = requireOption("collect", promptsPath))
    return e;
  if (Error e = requireOption("collect", outputPath))
    return e;
  Expected<LoadedModel> loaded = loadModelAndTokenizer("collect");
  if (!loaded)
    return loaded.takeError();
  Expected<std::vector<std::string>> prompts = readPrompts(promptsPath);
  if (!prompts)
    return prompts.takeError();

  const LlamaModel &model = loaded->model;
  const LlamaConfig &config = model.getConfig();
  // Checked before the model runs, not after.
  if (irCapacity < 0 || irCapacity > config.seqLen)
    return usageError("collect",
                      formatv("--ir-capacity {0} is outside [1, {1}] (the "
                              "model's context)",
                              int64_t(irCapacity), config.seqLen)
                          .str());
  // Classes longer than the model's context describe positions that cannot
  // exist (and overflowed the collector's block arithmetic).
  for (auto [name, value] : {std::pair<StringRef, long>{"sink", collectSink},
                             {"window", collectWindow},
                             {"block", collectBlock}})
    if (value > config.seqLen)
      return usageError("collect",
                        formatv("--{0} {1} exceeds the model's context of {2} "
                                "positions",
                                name, value, config.seqLen)
                            .str());
  if (!(sensitivityError >= 0.0) ||
      !std::isfinite(sensitivityError.getValue()) || sensitivityError > 1e3)
    return usageError("collect", "--sensitivity-error must be in [0, 1000]");
  PositionClasses classes{collectSink, collectWindow, collectBlock};
  StatsCollector collector(config, classes, collectQuerySamples);
  std::vector<std::vector<int>> sequences;
  LlamaRunner runner(model);
  Sampler sampler(/*temperature=*/0.0f, /*seed=*/0);
  GenerationOptions options;
  options.steps = collectSteps;
  options.runLastToken = true; // generated tokens are queries too

  for (size_t i = 0; i < prompts->size(); ++i) {
    Expected<std::vector<int>> tokens = loaded->tokenizer->encode(
        (*prompts)[i], /*addBOS=*/true,
        /*addEOS=*/false, loaded->model.getConfig().seqLen);
    if (!tokens)
      return createStringError(inconvertibleErrorCode(),
                               promptsPath + ": prompt " + Twine(i + 1) + ": " +
                                   toString(tokens.takeError()));
    Expected<GenerationResult> result =
        generate(runner, *tokens, sampler, options, &collector);
    if (!result)
      return createStringError(inconvertibleErrorCode(),
                               promptsPath + ": prompt " + Twine(i + 1) + ": " +
                                   toString(result.takeError()));
    sequences.push_back(result->tokens);
  }

  std::string name = modelName.empty() ? model.getName().str() : modelName;
  Expected<CalibrationStats> stats =
      collector.finish(name, prompts->size(), collectSteps);
  if (!stats)
    return stats.takeError();
  stats->modelDType = model.getWeightDType().str();
  if (sensitivityError > 0.0) {
    Expected<std::vector<double>> sensitivity = measureLayerKLSensitivity(
        model, sequences, float(sensitivityError.getValue()), /*seed=*/1);
    if (!sensitivity)
      return sensitivity.takeError();
    stats->layerKLSensitivity = std::move(*sensitivity);
    stats->sensitivityError = float(sensitivityError.getValue());
  }
  if (Error e = writeCalibrationFile(*stats, outputPath))
    return e;

  raw_ostream &os = outs();
  os << formatv("collected {0} statistics: {1} prompts, {2} steps each, {3} "
                "max positions, {4} query samples per (layer, KV head)\n",
                name, stats->prompts, stats->steps, stats->shape.maxPositions,
                stats->queryCount.front());
  if (!stats->layerKLSensitivity.empty()) {
    os << "layer KL sensitivity (mean KL per squared error, measured at "
       << format("%g", stats->sensitivityError) << "):";
    for (double s : stats->layerKLSensitivity)
      os << format(" %.4g", s);
    os << "\n";
  }
  os << "wrote " << outputPath << " (" << kCalibrationSchema << ")\n";
  if (!irPath.empty()) {
    DecodeStepShape shape{name,
                          "kvprec-calib collect",
                          /*synthetic=*/false,
                          config.numLayers,
                          config.numKVHeads,
                          config.numHeads,
                          config.getHeadSize(),
                          irCapacity > 0 ? int64_t(irCapacity)
                                         : stats->shape.maxPositions};
    if (Error e = writeDecodeStepIR(irPath, shape))
      return e;
    os << "wrote " << irPath << " (cache capacity " << shape.capacity << ")\n";
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// synth
//===----------------------------------------------------------------------===//

static Error runSynth() {
  if (Error e = requireOption("synth", outputPath))
    return e;
  SyntheticOptions options;
  options.layers = synthLayers;
  options.kvHeads = synthKVHeads;
  options.qHeads = synthQHeads;
  options.headDim = synthHeadDim;
  options.capacity = synthCapacity;
  options.block = synthBlock;
  options.sink = synthSink;
  options.window = synthWindow;
  options.seed = synthSeed;
  Expected<CalibrationStats> stats = generateSyntheticStats(options);
  if (!stats)
    return stats.takeError();
  if (Error e = writeCalibrationFile(*stats, outputPath))
    return e;
  raw_ostream &os = outs();
  os << "wrote " << outputPath << " (" << kCalibrationSchema
     << ", SYNTHETIC statistics: generated, not measured on a model)\n";
  if (!irPath.empty()) {
    DecodeStepShape shape{"synthetic",        "kvprec-calib synth",
                          /*synthetic=*/true, options.layers,
                          options.kvHeads,    options.qHeads,
                          options.headDim,    options.capacity};
    if (Error e = writeDecodeStepIR(irPath, shape))
      return e;
    os << "wrote " << irPath << "\n";
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// eval-bounds
//===----------------------------------------------------------------------===//

/// What eval-bounds and eval-quality both need: their options checked,
/// the model, its tokenizer and the prompts.
struct Evaluation {
  LoadedModel loaded;
  std::vector<std::string> prompts;
};

static Expected<Evaluation> loadEvaluation(StringRef command) {
  if (evalSteps < 0)
    return usageError(command, "--steps must be non-negative");
  if (Error e = requireOption(command, promptsPath))
    return std::move(e);
  if (Error e = requireOption(command, evalIrPath))
    return std::move(e);
  Expected<LoadedModel> loaded = loadModelAndTokenizer(command);
  if (!loaded)
    return loaded.takeError();
  Expected<std::vector<std::string>> prompts = readPrompts(promptsPath);
  if (!prompts)
    return prompts.takeError();
  return Evaluation{std::move(*loaded), std::move(*prompts)};
}

static Error runEvalBoundsCommand() {
  Expected<Evaluation> evaluation = loadEvaluation("eval-bounds");
  if (!evaluation)
    return evaluation.takeError();
  EvalBoundsInputs inputs;
  inputs.model = &evaluation->loaded.model;
  inputs.tokenizer = evaluation->loaded.tokenizer.get();
  inputs.checkpointPath = checkpointPath;
  inputs.promptsPath = promptsPath;
  inputs.prompts = std::move(evaluation->prompts);
  inputs.steps = evalSteps;
  inputs.irPath = evalIrPath;
  inputs.casesPath = casesPath;
  inputs.compiled = generateBackend == BackendKind::Compiled;
  return runEvalBounds(inputs, outs());
}

static Error runEvalQualityCommand() {
  Expected<Evaluation> evaluation = loadEvaluation("eval-quality");
  if (!evaluation)
    return evaluation.takeError();
  EvalQualityInputs inputs;
  inputs.model = &evaluation->loaded.model;
  inputs.tokenizer = evaluation->loaded.tokenizer.get();
  inputs.promptsPath = promptsPath;
  inputs.prompts = std::move(evaluation->prompts);
  inputs.steps = evalSteps;
  inputs.irPath = evalIrPath;
  inputs.backend = generateBackend;
  inputs.dumpPath = dumpLogitsPath;
  inputs.annotatePath = annotatePath;
  return runEvalQuality(inputs, outs());
}

static Error runPlanBudgetCommand() {
  if (Error e = requireOption("plan-budget", planBudgetOut))
    return e;
  if (planBudgetBytes.getNumOccurrences() == 0)
    return usageError("plan-budget", "--budget is required");
  Expected<Evaluation> evaluation = loadEvaluation("plan-budget");
  if (!evaluation)
    return evaluation.takeError();
  PlanBudgetInputs inputs;
  inputs.evaluation.model = &evaluation->loaded.model;
  inputs.evaluation.tokenizer = evaluation->loaded.tokenizer.get();
  inputs.evaluation.promptsPath = promptsPath;
  inputs.evaluation.prompts = std::move(evaluation->prompts);
  inputs.evaluation.steps = evalSteps;
  inputs.evaluation.irPath = evalIrPath;
  inputs.evaluation.backend = generateBackend;
  inputs.budget = planBudgetBytes;
  inputs.caps =
      planBudgetCaps.empty()
          ? getDefaultPlanBudgetCaps()
          : std::vector<double>(planBudgetCaps.begin(), planBudgetCaps.end());
  inputs.assignOptions = planBudgetAssign;
  inputs.outPath = planBudgetOut;
  return runPlanBudget(inputs, outs());
}

//===----------------------------------------------------------------------===//
// inspect
//===----------------------------------------------------------------------===//

static Error runInspect() {
  if (inspectPath.empty())
    return usageError("inspect", "expected a statistics file");
  Expected<SafeTensorsFile> file = SafeTensorsFile::open(inspectPath);
  if (!file)
    return file.takeError();
  Expected<CalibrationStats> stats = readCalibrationStats(*file);
  if (!stats)
    return stats.takeError();

  raw_ostream &os = outs();
  const CalibrationShape &shape = stats->shape;
  os << "file: " << inspectPath << "\n";
  os << "schema: " << kCalibrationSchema << "\n";
  os << "model: " << stats->model << "\n";
  if (!stats->modelDType.empty())
    os << "model_dtype: " << stats->modelDType << "\n";
  if (!stats->layerKLSensitivity.empty()) {
    os << "layer_kl_sensitivity (at error "
       << format("%g", stats->sensitivityError) << "):";
    for (double s : stats->layerKLSensitivity)
      os << format(" %.4g", s);
    os << "\n";
  }
  os << "synthetic: " << (stats->synthetic ? "true" : "false") << "\n";
  if (stats->synthetic)
    os << "note: SYNTHETIC statistics (generated, not measured on a model)\n";
  os << formatv("layers: {0}  kv_heads: {1}  q_heads: {2}  head_dim: {3}\n",
                shape.layers, shape.kvHeads, shape.qHeads, shape.headDim);
  os << formatv("sink: {0}  window: {1}  block: {2}  max_positions: {3}\n",
                shape.sink, shape.window, shape.block, shape.maxPositions);
  os << formatv("prompts: {0}  steps: {1}\n", stats->prompts, stats->steps);
  os << formatv("derived: G={0} NB={1} NA={2}\n",
                shape.getQueryHeadsPerKVHead(), shape.getNumBodyBlocks(),
                shape.getNumAbsoluteBlocks());
  int64_t fewestSamples =
      *std::min_element(stats->queryCount.begin(), stats->queryCount.end());
  os << formatv("query samples per (layer, KV head): at least {0}; "
                "statistical caveat: a new query exceeds a calibrated max "
                "with probability <= 1/(n+1) = ",
                fewestSamples)
     << format("%.3g", 1.0 / (static_cast<double>(fewestSamples) + 1.0))
     << " under exchangeability\n";

  os << "tensors:\n";
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    const SafeTensorEntry *entry = file->lookup(spec.name);
    os << "  " << left_justify(spec.name, 22) << " "
       << left_justify(getDTypeName(entry->dtype), 4) << " "
       << left_justify(formatShape(entry->shape), 16);
    if (entry->getNumElements() == 0) {
      os << " (empty)\n";
      continue;
    }
    if (spec.f32Member) {
      const std::vector<float> &values = stats.get().*spec.f32Member;
      auto [lo, hi] = std::minmax_element(values.begin(), values.end());
      os << format(" min %-12.6g max %.6g", *lo, *hi);
    } else {
      const std::vector<int64_t> &values = stats.get().*spec.i64Member;
      auto [lo, hi] = std::minmax_element(values.begin(), values.end());
      os << formatv(" min {0,-12} max {1}", *lo, *hi);
    }
    os << "\n";
  }
  return Error::success();
}

int main(int argc, char **argv) {
  InitLLVM initLLVM(argc, argv);
  cl::HideUnrelatedOptions({&modelCategory, &toolCategory});
  if (!kvprec::parseCommandLine(
          argc, argv,
          "kvprec-calib: calibration statistics for kvprec\n\n"
          "  generate  run a model (fp32 reference forward pass): a llama2.c\n"
          "            checkpoint (--checkpoint, --tokenizer) or a Hugging "
          "Face\n"
          "            Llama directory (--model)\n"
          "  tokenize  print the token ids of --text\n"
          "  collect   measure kvprec-calib-v1 statistics over prompts\n"
          "  synth     write SYNTHETIC statistics for a model shape (labelled "
          "synthetic;\n"
          "            for testing the compiler at scale, not measurements)\n"
          "  inspect   validate a statistics file and print its contents\n"
          "  eval-bounds\n"
          "            check a planned module's certified bounds against "
          "measured\n"
          "            attention errors of a cache stored as the plan says\n"
          "  eval-quality\n"
          "            KL, top-1 agreement and perplexity of a planned cache "
          "against\n"
          "            the fp32 one, overall and per layer\n"
          "  plan-budget\n"
          "            plan a byte budget at several logit error caps and "
          "keep the\n"
          "            plan with the lowest KL measured on the prompts (the\n"
          "            lowest bound among those it cannot tell apart)\n",
          "kvprec-calib"))
    return 1;

  Error error = Error::success();
  if (generateCommand)
    error = runGenerate();
  else if (collectCommand)
    error = runCollect();
  else if (tokenizeCommand)
    error = runTokenize();
  else if (synthCommand)
    error = runSynth();
  else if (inspectCommand)
    error = runInspect();
  else if (evalBoundsCommand)
    error = runEvalBoundsCommand();
  else if (evalQualityCommand)
    error = runEvalQualityCommand();
  else if (planBudgetCommand)
    error = runPlanBudgetCommand();
  else
    error = createStringError(inconvertibleErrorCode(),
                              "no subcommand given; use one of generate, "
                              "collect, tokenize, synth, inspect, "
                              "eval-bounds, eval-quality, plan-budget (see "
                              "--help)");
  if (error)
    return reportError(std::move(error));
  return 0;
}
