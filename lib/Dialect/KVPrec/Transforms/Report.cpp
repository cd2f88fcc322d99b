//===- Report.cpp - precision map, memory and certificate reports ---------===//

#include "PassSupport.h"

#include "kvprec/Analysis/Sensitivity.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"
#include "kvprec/Format/CacheLayout.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <map>

namespace mlir::kvprec {
#define GEN_PASS_DEF_REPORT
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;
namespace cf = ::kvprec::certify;

namespace {
/// Everything reported about one (layer, KV head).
struct HeadRow {
  int64_t layer, head;
  /// Per kv and class: format name and average stored bits per element.
  std::string format[2][cf::kNumSegments];
  double bits[2][cf::kNumSegments];
  bool hasCalibration = false;
  double bound = 0.0;
  double mass[cf::kNumSegments] = {};
  double queryL1 = 0.0;
  double logitMax = 0.0;
  int64_t samples = 0;
  double sinkMean = 0.0, windowMean = 0.0, entropy = 0.0;
};

/// Everything reported about one cache.
struct CacheReport {
  std::string name;
  cf::Geometry geometry;
  std::string calibration, model;
  bool synthetic = false;
  int64_t calibratedPositions = 0;
  double bytes = 0.0, f16Bytes = 0.0;
  /// The arena of the lowered cache (kvprec/Format/CacheLayout.h): its
  /// allocation size and the bytes of stored data in it, or why it has none.
  int64_t arenaBytes = 0, arenaDataBytes = 0;
  std::string layoutError;
  CertificateAttr certificate;
  /// Measured model quality (kvprec-calib eval-quality --annotate), or null.
  DictionaryAttr quality;
  double recomputedBound = 0.0;
  std::vector<HeadRow> rows;
};

struct ReportPass : public mlir::kvprec::impl::ReportBase<ReportPass> {
  using Base::Base;
  void runOnOperation() override;
};
} // namespace

/// Short label of a class's formats: one name, or "mixed" for per-block
/// bodies with the count of each format.
static std::string summarize(const cf::Plan &plan, int64_t item, int segment,
                             double &bits) {
  const cf::Geometry &g = plan.geometry;
  int64_t tokens = segment == cf::kSink     ? g.getSinkTokens()
                   : segment == cf::kWindow ? g.getWindowTokens()
                                            : g.getBodyTokens();
  if (segment != cf::kBody || !plan.perBlock) {
    const an::StorageFormat &f = segment == cf::kSink ? plan.getSink(item)
                                 : segment == cf::kWindow
                                     ? plan.getWindow(item)
                                     : plan.getBody(item, 0);
    bits = tokens > 0 ? cf::getSegmentBytes(f, tokens, g.headDim) * 8 /
                            double(tokens * g.headDim)
                      : 0.0;
    return describeFormat(f);
  }
  std::map<std::string, int64_t> counts;
  double totalBytes = 0.0;
  for (int64_t b = 0; b * g.block < tokens; ++b) {
    const an::StorageFormat &f = plan.getBody(item, b);
    ++counts[describeFormat(f)];
    totalBytes += cf::getSegmentBytes(
        f, std::min(g.block, tokens - b * g.block), g.headDim);
  }
  bits = tokens > 0 ? totalBytes * 8 / double(tokens * g.headDim) : 0.0;
  if (counts.size() == 1)
    return counts.begin()->first;
  std::string label;
  for (auto &[name, count] : counts)
    label += (label.empty() ? "" : "+") + std::to_string(count) + "x" + name;
  return label;
}

static void printTable(raw_ostream &os, const CacheReport &report) {
  const cf::Geometry &g = report.geometry;
  os << "kvprec precision report: cache " << report.name << "\n";
  os << "  shape: " << g.layers << " layers x " << g.heads << " KV heads x "
     << g.capacity << " positions x head_dim " << g.headDim << "\n";
  os << "  classes: sink " << g.sink << ", window " << g.window
     << " (whole blocks), body blocks of " << g.block << "\n";
  os << llvm::format("  memory: %.0f bytes vs %.0f in fp16 (%.3fx), %.3f "
                     "bits per element\n",
                     report.bytes, report.f16Bytes,
                     report.bytes / report.f16Bytes,
                     report.bytes * 8 / (report.f16Bytes / 2));
  if (report.layoutError.empty())
    os << llvm::format(
        "  layout: arena of %lld bytes, %lld of stored data%s\n",
        (long long)report.arenaBytes, (long long)report.arenaDataBytes,
        g.window > 0 ? " (the window ring keeps one block more)" : "");
  else
    os << "  layout: none: " << report.layoutError << "\n";
  if (report.certificate) {
    CertificateRecord c = readCertificateAttr(report.certificate);
    std::string target;
    if (c.tolerances.empty())
      target = llvm::formatv("budget {0:F0} bytes", c.budget).str();
    else {
      target = "tolerance ";
      for (size_t l = 0; l < c.tolerances.size(); ++l) {
        char buffer[40];
        std::snprintf(buffer, sizeof(buffer), "%s%g", l ? "," : "",
                      c.tolerances[l]);
        target += buffer;
      }
      if (c.tolerances.size() > 1)
        target += " (per layer)";
    }
    std::string kind = c.querySamples > 0 ? "joint over up to " +
                                                std::to_string(c.querySamples) +
                                                " query samples per head"
                                          : "coordinate-wise envelopes";
    if (c.probabilistic) {
      char buffer[160];
      std::snprintf(buffer, sizeof(buffer),
                    "PROBABILISTIC: holds with probability >= 1 - %g per "
                    "decode step under rounding model (M), not a proof; ",
                    c.confidence);
      kind = buffer + kind;
    } else {
      kind = "deterministic, " + kind;
    }
    os << llvm::format("  certificate (%s): %s, certified bound %.3g "
                       "(recomputed %.3g)\n",
                       kind.c_str(), target.c_str(), c.bound,
                       report.recomputedBound);
    os << "  layer bounds:";
    for (double bound : c.layerBounds)
      os << llvm::format(" %.3g", bound);
    os << "\n";
    os << llvm::format("  %s: %.2f (necessary only)\n",
                       an::kHnfNecessaryBitsLabel, c.necessaryBits);
    os << llvm::format("  arithmetic contract: softmax scale %.6g, dequantize "
                       "in %s, accumulate in f32 over blocks of %lld "
                       "positions, exp within %lld ulps\n",
                       c.softmaxScale, an::getStorageKindName(c.dequant),
                       (long long)c.accumulateBlock, (long long)c.expUlps);
    os << "  assumes: ";
    llvm::interleaveComma(report.certificate.getAssumptions(), os);
    os << "\n";
    if (c.extrapolated)
      os << llvm::format("  EXTRAPOLATED: the cache holds %lld positions, "
                         "calibration observed %lld; past them every class "
                         "mass is 1 and every magnitude envelope is %.3g "
                         "times the calibrated one (a stated rule, not "
                         "data)\n",
                         (long long)report.geometry.capacity,
                         (long long)c.calibratedLength, c.margin);
  } else {
    os << "  certificate: none (the plan was not derived from calibration)\n";
  }
  if (report.quality) {
    auto number = [&](StringRef key) {
      auto value = report.quality.getAs<FloatAttr>(key);
      return value ? value.getValueAsDouble() : std::nan("");
    };
    auto integer = [&](StringRef key) {
      auto value = report.quality.getAs<IntegerAttr>(key);
      return value ? value.getInt() : int64_t(0);
    };
    auto text = [&](StringRef key) {
      auto value = report.quality.getAs<StringAttr>(key);
      return value ? value.getValue().str() : std::string("?");
    };
    os << llvm::format("  measured on the model (eval-quality, %s cache, %lld "
                       "positions of %s): mean KL %.3g, max KL %.3g, top-1 "
                       "%.4f, perplexity %.4f vs %.4f in fp32 (measured, "
                       "not certified)\n",
                       text("backend").c_str(), (long long)integer("tokens"),
                       text("prompts").c_str(), number("mean_kl"),
                       number("max_kl"), number("top1_agreement"),
                       number("ppl_plan"), number("ppl_fp32"));
  }
  if (!report.calibration.empty()) {
    os << "  calibration: @" << report.calibration << " (model " << report.model
       << (report.synthetic ? ", SYNTHETIC statistics" : "") << ", "
       << report.calibratedPositions << " positions observed)\n";
    os << "  the static bound holds for queries whose attention masses "
          "(attention_mass), |q_j| (query_magnitude) and sum_j |q_j||K_j| "
          "(logit_envelope) stay within the calibrated envelopes, for K and V "
          "within their calibrated channel ranges (kv_ranges), and for "
          "lengths up to the calibrated one (calibrated_length); P(a new "
          "query exceeds the max of n samples) <= 1/(n+1) under "
          "exchangeability (statistical). The run-time certificate of "
          "kvprec.attend needs none of these\n";
    if (report.certificate && report.certificate.getProbabilistic())
      os << "  rounding_model (M): stored K/V rounding errors are "
            "independent, mean zero, within the per-element bounds and "
            "independent of the query (error-bounds.md section 9); a "
            "deterministic certificate needs no such model\n";
  }
  os << "\n";
  os << llvm::format("%-5s %-4s | %-20s %-20s %-20s | %-20s %-20s %-20s",
                     "layer", "head", "K sink", "K window", "K body", "V sink",
                     "V window", "V body");
  if (!report.calibration.empty())
    os << llvm::format(
        " | %-9s | %-6s %-6s %-6s %-7s %-7s %-6s | %-6s %-6s %-7s", "bound",
        "A_sink", "A_win", "A_body", "|q|_1", "|qK|", "n", "sink", "window",
        "entropy");
  os << "\n";
  for (const HeadRow &row : report.rows) {
    os << llvm::format("%-5lld %-4lld |", (long long)row.layer,
                       (long long)row.head);
    for (int kv = 0; kv < 2; ++kv) {
      for (int s = 0; s < cf::kNumSegments; ++s)
        os << llvm::format(" %-20s", row.format[kv][s].c_str());
      os << " |";
    }
    if (row.hasCalibration)
      os << llvm::format(
          " %-9.3g | %-6.3f %-6.3f %-6.3f %-7.3g %-7.3g %-6lld | %-6.3f "
          "%-6.3f %-7.3f",
          row.bound, row.mass[0], row.mass[1], row.mass[2], row.queryL1,
          row.logitMax, (long long)row.samples, row.sinkMean, row.windowMean,
          row.entropy);
    os << "\n";
  }
  os << "\nA_*: attention-mass envelopes of the plan's classes (C1); |q|_1: "
        "max query L1 norm (C2); |qK|: logit envelope max scale*sum_j "
        "|q_j||K_j| (relative-error key formats); n: calibration samples; "
        "sink/window: mean "
        "attention mass; entropy in nats.\n";
}

static llvm::json::Value toJson(const CacheReport &report) {
  const cf::Geometry &g = report.geometry;
  llvm::json::Array rows;
  for (const HeadRow &row : report.rows) {
    llvm::json::Object object{{"layer", row.layer}, {"head", row.head}};
    for (int kv = 0; kv < 2; ++kv) {
      llvm::json::Object classes;
      for (int s = 0; s < cf::kNumSegments; ++s)
        classes[cf::getSegmentName(s)] = llvm::json::Object{
            {"format", row.format[kv][s]}, {"bits", row.bits[kv][s]}};
      object[kv == 0 ? "keys" : "values"] = std::move(classes);
    }
    if (row.hasCalibration) {
      object["bound"] = row.bound;
      object["envelope"] = llvm::json::Object{
          {"sink_mass", row.mass[0]},  {"window_mass", row.mass[1]},
          {"body_mass", row.mass[2]},  {"query_l1_max", row.queryL1},
          {"logit_max", row.logitMax}, {"samples", row.samples}};
      object["attention"] =
          llvm::json::Object{{"sink_mass_mean", row.sinkMean},
                             {"window_mass_mean", row.windowMean},
                             {"entropy_mean", row.entropy}};
    }
    rows.push_back(std::move(object));
  }
  llvm::json::Object result{
      {"cache", report.name},
      {"shape", llvm::json::Object{{"layers", g.layers},
                                   {"kv_heads", g.heads},
                                   {"capacity", g.capacity},
                                   {"head_dim", g.headDim}}},
      {"classes", llvm::json::Object{{"sink", g.sink},
                                     {"window", g.window},
                                     {"block", g.block}}},
      {"memory",
       llvm::json::Object{{"bytes", report.bytes},
                          {"f16_bytes", report.f16Bytes},
                          {"bytes_vs_f16", report.bytes / report.f16Bytes}}},
      {"heads", std::move(rows)}};
  if (report.layoutError.empty())
    result["layout"] =
        llvm::json::Object{{"arena_bytes", report.arenaBytes},
                           {"data_bytes", report.arenaDataBytes}};
  else
    result["layout"] = llvm::json::Object{{"error", report.layoutError}};
  if (report.certificate) {
    CertificateRecord c = readCertificateAttr(report.certificate);
    llvm::json::Array assumes;
    for (StringRef name : report.certificate.getAssumptions())
      assumes.push_back(name.str());
    llvm::json::Object certificate{
        {"model", c.probabilistic ? "probabilistic" : "deterministic"},
        {"confidence", c.confidence},
        {"tolerance", llvm::json::Array(c.tolerances)},
        {"bound", c.bound},
        {"layer_bounds", llvm::json::Array(c.layerBounds)},
        {"recomputed_bound", report.recomputedBound},
        {"hnf_necessary_bits_lower_bound", c.necessaryBits},
        {"average_bits", c.averageBits},
        {"bytes_vs_f16", c.bytesVsF16},
        {"calibrated_length", c.calibratedLength},
        {"query_samples", c.querySamples},
        {"extrapolation", c.extrapolated ? "worst_case" : "none"},
        {"margin", c.margin},
        {"softmax_scale", c.softmaxScale},
        {"dequant", an::getStorageKindName(c.dequant)},
        {"accumulate", "f32"},
        {"accumulate_block", c.accumulateBlock},
        {"exp_ulps", c.expUlps},
        {"assumes", std::move(assumes)}};
    if (c.tolerances.empty())
      certificate["budget"] = c.budget;
    result["certificate"] = std::move(certificate);
  }
  if (report.quality) {
    llvm::json::Object quality;
    for (NamedAttribute entry : report.quality) {
      if (auto f = dyn_cast<FloatAttr>(entry.getValue()))
        quality[entry.getName().getValue()] = f.getValueAsDouble();
      else if (auto i = dyn_cast<IntegerAttr>(entry.getValue()))
        quality[entry.getName().getValue()] = i.getInt();
      else if (auto t = dyn_cast<StringAttr>(entry.getValue()))
        quality[entry.getName().getValue()] = t.getValue().str();
    }
    result["quality"] = std::move(quality);
  }
  if (!report.calibration.empty())
    result["calibration"] =
        llvm::json::Object{{"name", report.calibration},
                           {"model", report.model},
                           {"synthetic", report.synthetic},
                           {"positions_observed", report.calibratedPositions}};
  return llvm::json::Value(std::move(result));
}

/// Colour of a bits-per-element value, from red (few bits) to blue (many).
static std::string bitsColour(double bits) {
  double t = std::clamp((std::log2(std::max(bits, 1.0)) - 1.0) / 4.0, 0.0, 1.0);
  int r = int(220 * (1 - t) + 30 * t), gch = int(60 + 120 * t),
      b = int(50 * (1 - t) + 220 * t);
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "#%02x%02x%02x", r, gch, b);
  return buffer;
}

static void printSvg(raw_ostream &os, const CacheReport &report) {
  const int cellW = 90, cellH = 18, left = 80, top = 60;
  int width = left + 6 * cellW + 20;
  int height = top + int(report.rows.size()) * cellH + 60;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
     << "\" height=\"" << height << "\" font-family=\"monospace\" "
     << "font-size=\"10\">\n";
  os << "<text x=\"4\" y=\"16\" font-size=\"13\">kvprec precision map: "
     << report.name
     << llvm::format(" (%.3fx fp16)", report.bytes / report.f16Bytes)
     << "</text>\n";
  const char *columns[6] = {"K sink", "K window", "K body",
                            "V sink", "V window", "V body"};
  for (int c = 0; c < 6; ++c)
    os << "<text x=\"" << left + c * cellW + 4 << "\" y=\"" << top - 8 << "\">"
       << columns[c] << "</text>\n";
  for (size_t r = 0; r < report.rows.size(); ++r) {
    const HeadRow &row = report.rows[r];
    int y = top + int(r) * cellH;
    os << "<text x=\"4\" y=\"" << y + 13 << "\">L" << row.layer << " H"
       << row.head << "</text>\n";
    for (int kv = 0; kv < 2; ++kv)
      for (int s = 0; s < cf::kNumSegments; ++s) {
        int x = left + (kv * 3 + s) * cellW;
        os << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cellW - 2
           << "\" height=\"" << cellH - 2 << "\" fill=\""
           << bitsColour(row.bits[kv][s]) << "\"><title>" << row.format[kv][s]
           << llvm::format(" (%.2f bits)", row.bits[kv][s])
           << "</title></rect>\n";
        os << "<text x=\"" << x + 3 << "\" y=\"" << y + 12
           << "\" fill=\"white\">" << llvm::format("%.2f", row.bits[kv][s])
           << "</text>\n";
      }
  }
  os << "<text x=\"4\" y=\"" << height - 20
     << "\">cells: stored bits per element incl. scales (red few, blue "
        "many)</text>\n";
  os << "</svg>\n";
}

void ReportPass::runOnOperation() {
  ModuleOp module = getOperation();
  FailureOr<std::vector<CalibratedAlloc>> allocs =
      collectCalibratedAllocs(module);
  if (failed(allocs))
    return signalPassFailure();
  std::vector<CacheReport> reports;
  for (CalibratedAlloc &entry : *allocs) {
    AllocOp alloc = entry.alloc;
    CacheType cache = alloc.getCache().getType();
    std::optional<cf::Plan> plan = toPlainPlan(cache);
    if (!plan)
      continue;
    CacheReport report;
    std::string name;
    llvm::raw_string_ostream nameStream(name);
    nameStream << cache.getLayers() << "x" << cache.getHeads() << "x"
               << cache.getCapacity() << "x" << cache.getHeadDim() << "x"
               << cache.getElementType();
    report.name = name;
    report.geometry = plan->geometry;
    report.bytes = plan->getTotalBytes();
    report.f16Bytes = double(plan->getNumItems()) * plan->geometry.capacity *
                      plan->geometry.headDim * 2;
    {
      std::unique_ptr<::kvprec::layout::ArenaLayout> layout;
      ::kvprec::analysis::Status status =
          ::kvprec::layout::ArenaLayout::build(*plan, layout);
      if (status.ok()) {
        report.arenaBytes = layout->getTotalBytes();
        report.arenaDataBytes = layout->getDataBytes();
      } else {
        report.layoutError = status.getMessage();
      }
    }
    report.certificate = cache.getPlan().getCertificate();
    report.quality = alloc->getAttrOfType<DictionaryAttr>("kvprec.quality");
    // Bounds are recomputed under the contract the certificate states.
    cf::CertifyOptions options;
    FailureOr<double> scale = getCacheSoftmaxScale(alloc);
    if (failed(scale))
      return signalPassFailure();
    options.softmaxScale = *scale;
    if (report.certificate && report.certificate.getProbabilistic()) {
      options.certificate = cf::CertificateKind::Probabilistic;
      options.failureProbability =
          report.certificate.getConfidence().convertToDouble();
    }
    if (report.certificate && report.certificate.getExtrapolated()) {
      options.extrapolation = cf::Extrapolation::WorstCase;
      options.extrapolationMargin =
          report.certificate.getMargin().convertToDouble();
    }
    if (entry.stats) {
      report.calibration = alloc.getCalibrationAttr().getValue().str();
      report.model = entry.stats->model;
      report.synthetic = entry.stats->synthetic;
      report.calibratedPositions = entry.stats->shape.maxPositions;
      if (std::string problem =
              cf::checkCoverage(*entry.stats, plan->geometry, options);
          !problem.empty()) {
        alloc.emitOpError()
            << "cannot be reported against its calibration: " << problem;
        return signalPassFailure();
      }
    }
    const cf::Geometry &g = plan->geometry;
    for (int64_t l = 0; l < g.layers; ++l)
      for (int64_t h = 0; h < g.heads; ++h) {
        HeadRow row;
        row.layer = l;
        row.head = h;
        for (int kv = 0; kv < 2; ++kv)
          for (int s = 0; s < cf::kNumSegments; ++s)
            row.format[kv][s] =
                summarize(*plan, plan->getItem(l, h, kv), s, row.bits[kv][s]);
        if (entry.stats) {
          const ::kvprec::calib::CalibrationStats &stats = *entry.stats;
          row.hasCalibration = true;
          an::StaticCertifiedBound bound;
          double keyLogitError = 0.0;
          if (an::Status status = cf::certifyPlanHead(
                  stats, *plan, l, h, options, bound, keyLogitError);
              status.failed()) {
            alloc.emitOpError()
                << "plan of layer " << l << ", KV head " << h
                << " cannot be certified: " << status.getMessage();
            return signalPassFailure();
          }
          row.bound = bound.infNorm;
          report.recomputedBound = std::max(report.recomputedBound, row.bound);
          cf::HeadEnvelope envelope =
              cf::buildHeadEnvelope(stats, g, l, h, options);
          for (int s = 0; s < cf::kNumSegments; ++s)
            row.mass[s] = envelope.mass[s];
          size_t lh = stats.index(l, h);
          row.queryL1 = stats.qL1Max[lh];
          row.logitMax = envelope.logitEnvelope;
          row.samples = stats.queryCount[lh];
          row.sinkMean = stats.attnSinkMassMean[lh];
          row.windowMean = stats.attnWindowMassMean[lh];
          row.entropy = stats.attnEntropyMean[lh];
        }
        report.rows.push_back(std::move(row));
      }
    reports.push_back(std::move(report));
  }
  if (reports.empty()) {
    module.emitError("kvprec-report: no cache has a plan (run "
                     "--kvprec-assign-precision first)");
    return signalPassFailure();
  }

  std::error_code error;
  std::unique_ptr<llvm::raw_fd_ostream> file;
  if (output != "-") {
    file = std::make_unique<llvm::raw_fd_ostream>(output, error,
                                                  llvm::sys::fs::OF_Text);
    if (error) {
      module.emitError() << "kvprec-report: cannot write '" << output
                         << "': " << error.message();
      return signalPassFailure();
    }
  }
  raw_ostream &os = file ? *file : llvm::outs();
  if (format == ReportFormat::Json) {
    llvm::json::Array array;
    for (const CacheReport &report : reports)
      array.push_back(toJson(report));
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(array))) << "\n";
  } else {
    for (const CacheReport &report : reports)
      format == ReportFormat::Svg ? printSvg(os, report)
                                  : printTable(os, report);
  }
  os.flush();
}
