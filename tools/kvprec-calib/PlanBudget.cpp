//===- PlanBudget.cpp - a byte budget spent by measured KL ----------------===//

#include "PlanBudget.h"

#include "kvprec/Calibration/InputFile.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"
#include "kvprec/InitKVPrec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"

#include <cmath>
#include <mutex>
#include <optional>
#include <tuple>

using namespace llvm;
using namespace kvprec::calib;

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message.str());
}

std::vector<double> kvprec::calib::getDefaultPlanBudgetCaps() {
  return {0.25, 0.5, 1, 2, 4, 8, 16, 32};
}

namespace {
/// One candidate: its cap, and either why it could not be planned or what
/// it does to the model.
struct Candidate {
  /// A uniform plan of this format (mode=uniform), or else the certified
  /// allocator's budget mode at logit error cap `cap` and `granularity`
  /// (empty: as --assign says).
  std::string uniformFormat;
  double cap = 0.0;
  std::string granularity;
  std::string options;
  std::string path;
  std::string error;
  std::optional<QualityMeasurement> measurement;
  double bound = 0.0;
  /// Against the lowest mean KL: the mean per-position excess of KL and its
  /// standard error, and whether the excess is within two of them.
  double klExcess = 0.0, klExcessError = 0.0;
  bool indistinguishable = false;
};
} // namespace

/// The paired comparison of `c` with `best`, measured on the same positions:
/// the mean of KL_c - KL_best and its standard error.
static void comparePaired(Candidate &c, const Candidate &best) {
  const std::vector<double> &a = c.measurement->whole.kls;
  const std::vector<double> &b = best.measurement->whole.kls;
  size_t n = std::min(a.size(), b.size());
  if (n == 0 || a.size() != b.size()) {
    c.klExcess =
        c.measurement->whole.getMeanKL() - best.measurement->whole.getMeanKL();
    c.klExcessError = 0.0;
    c.indistinguishable = c.klExcess <= 0.0;
    return;
  }
  double mean = 0.0;
  for (size_t i = 0; i < n; ++i)
    mean += a[i] - b[i];
  mean /= double(n);
  double squares = 0.0;
  for (size_t i = 0; i < n; ++i)
    squares += (a[i] - b[i] - mean) * (a[i] - b[i] - mean);
  double error = n > 1 ? std::sqrt(squares / double(n - 1) / double(n)) : 0.0;
  c.klExcess = mean;
  c.klExcessError = error;
  c.indistinguishable = mean <= 2.0 * error;
}

/// kvprec-assign-precision{`options`} on the module at `inputPath`, written
/// to `outputPath` with its first planned cache's certified `bound` and
/// `bytes`; the error says what the pass (or the parser) said.
static Error planModule(StringRef inputPath, StringRef options,
                        StringRef outputPath, double &bound, double &bytes) {
  static std::once_flag registered;
  std::call_once(registered, [] { ::kvprec::registerKVPrecPasses(); });
  mlir::DialectRegistry registry;
  ::kvprec::registerKVPrecToolDialects(registry);
  mlir::MLIRContext context(registry);
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diag) {
    if (diag.getSeverity() != mlir::DiagnosticSeverity::Error)
      return mlir::success();
    if (!diagnostics.empty())
      diagnostics += "\n";
    diagnostics += formatLocation(diag.getLocation()) + ": " + diag.str();
    return mlir::success();
  });
  Expected<mlir::OwningOpRef<mlir::ModuleOp>> parsed =
      parseModuleFile(inputPath, "the calibrated module", context, diagnostics);
  if (!parsed)
    return parsed.takeError();
  mlir::OwningOpRef<mlir::ModuleOp> module = std::move(*parsed);
  mlir::PassManager pm(&context);
  std::string pipelineErrors;
  raw_string_ostream pipelineStream(pipelineErrors);
  if (mlir::failed(mlir::parsePassPipeline(
          ("kvprec-assign-precision{" + options + "}").str(), pm,
          pipelineStream)))
    return makeError("kvprec-assign-precision{" + options +
                     "}: " + StringRef(pipelineErrors).trim());
  if (mlir::failed(pm.run(*module)))
    return makeError(diagnostics.empty() ? "kvprec-assign-precision failed"
                                         : StringRef(diagnostics));
  // The first planned cache is the one eval-quality measures.
  bound = bytes = 0.0;
  module->walk([&](mlir::kvprec::AllocOp alloc) {
    mlir::kvprec::CacheType cache = alloc.getCache().getType();
    if (!cache.getPlan())
      return mlir::WalkResult::advance();
    if (auto certificate = cache.getPlan().getCertificate())
      bound = certificate.getBound().convertToDouble();
    if (auto plan = mlir::kvprec::toPlainPlan(cache))
      bytes = plan->getTotalBytes();
    return mlir::WalkResult::interrupt();
  });
  std::error_code ec;
  raw_fd_ostream out(outputPath, ec);
  if (ec)
    return makeError(outputPath + ": cannot write: " + ec.message());
  module->print(out);
  return Error::success();
}

/// JSON has no infinities: write them as null.
static json::Value number(double value) {
  if (std::isfinite(value))
    return value;
  return nullptr;
}

Error kvprec::calib::runPlanBudget(const PlanBudgetInputs &inputs,
                                   raw_ostream &os) {
  if (!(inputs.budget > 0) || !std::isfinite(inputs.budget))
    return makeError(formatv("plan-budget: --budget must be a positive "
                             "number of bytes, got {0}",
                             format("%g", inputs.budget)));
  if (inputs.caps.empty())
    return makeError("plan-budget: --ecaps lists no cap");
  for (double cap : inputs.caps)
    if (!(cap > 0) || !(cap <= 100))
      return makeError(formatv("plan-budget: every --ecaps value must be in "
                               "(0, 100] (kvprec-assign-precision's ecap), "
                               "got {0}",
                               format("%g", cap)));
  // The search owns these options; the rest pass through. Integer scales
  // shared per token or per channel (KIVI's keys) are both tried unless
  // --assign says which.
  SmallVector<StringRef> words;
  StringRef(inputs.assignOptions).split(words, ' ', -1, /*KeepEmpty=*/false);
  std::vector<std::string> granularities = {"token", "channel"};
  for (StringRef word : words) {
    StringRef name = word.split('=').first.trim();
    for (StringRef owned : {"budget", "ecap", "mode", "tolerance", "kl"})
      if (name == owned)
        return makeError("plan-budget: --assign cannot set " + owned +
                         "= (plan-budget sets budget= and ecap=, with "
                         "mode=certified)");
    if (name == "granularity")
      granularities = {""};
  }

  SmallString<128> directory;
  if (std::error_code ec =
          sys::fs::createUniqueDirectory("kvprec-plan-budget", directory))
    return makeError("plan-budget: cannot create a temporary directory: " +
                     ec.message());
  std::vector<Candidate> candidates;
  llvm::scope_exit cleanup([&] {
    for (const Candidate &c : candidates)
      sys::fs::remove(c.path);
    sys::fs::remove(directory);
  });

  // The allocator's candidates, then the uniform plans (a budget that one
  // format fills is sometimes best spent on that format alone).
  for (const std::string &granularity : granularities)
    for (double cap : inputs.caps) {
      Candidate candidate;
      candidate.cap = cap;
      candidate.granularity = granularity;
      candidate.options =
          formatv("budget={0} ecap={1} quiet=true {2}{3}",
                  format("%.17g", inputs.budget), format("%.17g", cap),
                  granularity.empty() ? "" : "granularity=" + granularity + " ",
                  inputs.assignOptions)
              .str();
      candidates.push_back(std::move(candidate));
    }
  for (const char *format :
       {"f32", "f16", "bf16", "f8E4M3FN", "f8E5M2", "i8", "i4", "i2"}) {
    Candidate candidate;
    candidate.uniformFormat = format;
    candidate.options = formatv("mode=uniform format={0} quiet=true {1}",
                                format, inputs.assignOptions)
                            .str();
    candidates.push_back(std::move(candidate));
  }

  for (Candidate &candidate : candidates) {
    SmallString<128> path(directory);
    sys::path::append(
        path, formatv("candidate-{0}.mlir", &candidate - &candidates[0]).str());
    candidate.path = path.str().str();
    double bytes = 0.0;
    if (Error e = planModule(inputs.evaluation.irPath, candidate.options,
                             candidate.path, candidate.bound, bytes)) {
      candidate.error = toString(std::move(e));
      // The first line says why (the rest are notes).
      candidate.error = StringRef(candidate.error).split('\n').first.str();
      continue;
    }
    if (bytes > inputs.budget) {
      candidate.error =
          formatv("its {0} bytes exceed the budget", format("%.0f", bytes))
              .str();
      continue;
    }
    EvalQualityInputs evaluation = inputs.evaluation;
    evaluation.irPath = candidate.path;
    evaluation.dumpPath.clear();
    evaluation.annotatePath.clear();
    Expected<QualityMeasurement> measured =
        measureQuality(evaluation, /*perLayer=*/false);
    if (!measured)
      return measured.takeError();
    candidate.measurement = std::move(*measured);
  }

  // The lowest mean KL (at equal KL the fewer bytes, then the first) is
  // the reference. Every candidate whose excess of KL over it, position by
  // position, is within two standard errors cannot be told from it on these
  // prompts; of those the one with the lowest certified bound is kept (then
  // the lower KL, the fewer bytes, the first): where the measurement cannot
  // decide, the certificate does.
  const Candidate *lowest = nullptr;
  auto measuredKey = [](const Candidate &x) {
    return std::make_pair(x.measurement->whole.getMeanKL(),
                          x.measurement->cache.plan.getTotalBytes());
  };
  for (const Candidate &c : candidates)
    if (c.measurement && (!lowest || measuredKey(c) < measuredKey(*lowest)))
      lowest = &c;
  const Candidate *chosen = nullptr;
  if (lowest) {
    for (Candidate &c : candidates)
      if (c.measurement)
        comparePaired(c, *lowest);
    auto key = [](const Candidate &x) {
      // A bound that is not a number sorts last.
      double bound = std::isnan(x.bound) ? INFINITY : x.bound;
      return std::make_tuple(bound, x.measurement->whole.getMeanKL(),
                             x.measurement->cache.plan.getTotalBytes());
    };
    for (const Candidate &c : candidates)
      if (c.measurement && c.indistinguishable &&
          (!chosen || key(c) < key(*chosen)))
        chosen = &c;
  }
  if (!chosen) {
    std::string reasons;
    for (const Candidate &c : candidates)
      reasons +=
          formatv("\n  {0}: {1}", StringRef(c.options).trim(), c.error).str();
    return makeError(formatv("plan-budget: no candidate gives a plan within "
                             "{0} bytes:{1}",
                             format("%g", inputs.budget), reasons));
  }

  json::OStream json(os, 2);
  json.object([&] {
    json.attribute("model", inputs.evaluation.model->getName());
    json.attribute("ir", inputs.evaluation.irPath);
    json.attribute("prompts", inputs.evaluation.promptsPath);
    json.attribute("steps", inputs.evaluation.steps);
    json.attribute("budget", number(inputs.budget));
    json.attribute("tokens", chosen->measurement->whole.positions);
    json.attributeArray("candidates", [&] {
      for (const Candidate &c : candidates)
        json.object([&] {
          json.attribute("options", c.options);
          if (!c.uniformFormat.empty()) {
            json.attribute("uniform", c.uniformFormat);
          } else {
            json.attribute("ecap", number(c.cap));
            if (!c.granularity.empty())
              json.attribute("granularity", c.granularity);
          }
          if (!c.measurement) {
            json.attribute("error", c.error);
            return;
          }
          const QualityTotals &whole = c.measurement->whole;
          json.attribute("plan_bytes",
                         number(c.measurement->cache.plan.getTotalBytes()));
          json.attribute("mean_kl", number(whole.getMeanKL()));
          json.attribute("max_kl", number(whole.maxKL));
          json.attribute("top1_agreement", number(whole.getTop1Agreement()));
          json.attribute("bound", number(c.bound));
          json.attribute("kl_excess", number(c.klExcess));
          json.attribute("kl_excess_error", number(c.klExcessError));
          json.attribute("indistinguishable", c.indistinguishable);
        });
    });
    json.attribute("lowest_kl", lowest->options);
    json.attribute("chosen", chosen->options);
    json.attribute("plan_bytes",
                   number(chosen->measurement->cache.plan.getTotalBytes()));
    json.attribute("mean_kl", number(chosen->measurement->whole.getMeanKL()));
    json.attribute("bound", number(chosen->bound));
    json.attribute("out", inputs.outPath);
  });
  os << "\n";
  return annotateQuality(chosen->path, *chosen->measurement,
                         inputs.evaluation.backend,
                         inputs.evaluation.promptsPath, inputs.outPath);
}
