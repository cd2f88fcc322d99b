//===- Report.cpp - precision map, memory and certificate reports ---------===//

#include "PassSupport.h"

#include "kvprec/Analysis/Sensitivity.h"
#include "kvprec/Calibration/InputFile.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"
#include "kvprec/Format/CacheLayout.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
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
  /// The plan (the SVG draws every format and per-block body).
  cf::Plan plan;
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

/// Stored bits per element of `format` in units of `tokens` positions.
static double formatBits(const an::StorageFormat &format, int64_t tokens,
                         int64_t headDim) {
  tokens = std::max<int64_t>(tokens, 1);
  return cf::getSegmentBytes(format, tokens, headDim) * 8 /
         double(tokens * headDim);
}

/// The fill colour of each element kind, fixed so that a kind reads the same
/// in every picture: a spectral scale from many bits (blue) through fp8
/// (green) to few bits (red).
static StringRef getKindColour(an::StorageKind kind) {
  switch (kind) {
  case an::StorageKind::F32:
    return "#313695";
  case an::StorageKind::F16:
    return "#4575b4";
  case an::StorageKind::BF16:
    return "#74add1";
  case an::StorageKind::F8E4M3FN:
    return "#1a9850";
  case an::StorageKind::F8E5M2:
    return "#91cf60";
  case an::StorageKind::Int8:
    return "#fdae61";
  case an::StorageKind::Int4:
    return "#f46d43";
  case an::StorageKind::Int3:
    return "#d73027";
  case an::StorageKind::Int2:
    return "#a50026";
  }
  return "#999999";
}

/// `hex` (#rrggbb) mixed with white (`t` > 0) or black (`t` < 0) by |t|:
/// the shades that tell apart two formats of one kind in a plan.
static std::string shadeColour(StringRef hex, double t) {
  unsigned rgb = 0;
  hex.drop_front().getAsInteger(16, rgb);
  std::string result = "#";
  for (int shift = 16; shift >= 0; shift -= 8) {
    double c = (rgb >> shift) & 0xff;
    c = t >= 0 ? c + (255 - c) * t : c * (1 + t);
    result += llvm::formatv("{0:x-2}", unsigned(std::lround(c))).str();
  }
  return result;
}

/// The colour of each of `formats`: its kind's, and for the second, third,
/// ... format of one kind (in the order of `ranked`) a lighter or darker
/// shade, alternating, so that every format of the plan stays distinct.
static std::vector<std::string>
getFormatColours(ArrayRef<an::StorageFormat> formats,
                 ArrayRef<std::pair<double, int>> ranked) {
  static const double kShades[] = {0.0, 0.45, -0.35, 0.7, -0.55, 0.85, -0.7};
  std::vector<std::string> colours(formats.size());
  std::map<an::StorageKind, int> seen;
  for (auto [bits, f] : ranked) {
    int variant = seen[formats[f].kind]++;
    colours[f] = shadeColour(getKindColour(formats[f].kind),
                             kShades[variant % std::size(kShades)]);
  }
  return colours;
}

/// The quality benchmark's results file as the SVG plot reads it: its path
/// and its text.
struct QualityResults {
  StringRef path, text;
};

/// A plot of bytes against mean KL of the quality benchmark's plans
/// (bench/quality/results.jsonl) for `model`, at (x, y), w x h pixels.
static void printQualityPlot(raw_ostream &os, const QualityResults &results,
                             StringRef model, int x0, int y0, int w, int h) {
  StringRef path = results.path;
  struct Point {
    std::string plan;
    double bytes, kl;
    /// A kvprec plan (blue) or a baseline (red).
    bool kvprec;
  };
  std::vector<Point> points;
  SmallVector<StringRef> lines;
  results.text.split(lines, '\n');
  for (StringRef line : lines) {
    llvm::Expected<llvm::json::Value> value = llvm::json::parse(line);
    if (!value) {
      llvm::consumeError(value.takeError());
      continue;
    }
    const llvm::json::Object *row = value->getAsObject();
    if (!row || (!model.empty() && row->getString("model") != model))
      continue;
    std::optional<double> bytes = row->getNumber("bytes_vs_fp16"),
                          kl = row->getNumber("mean_kl");
    std::optional<StringRef> plan = row->getString("plan");
    // bench/quality/run.sh says which plans are kvprec's; older files by
    // the name, as bench/quality/report.py reads them.
    std::optional<bool> kvprec = row->getBoolean("kvprec");
    if (!kvprec && plan)
      kvprec =
          plan->starts_with("certified-") || plan->starts_with("measured-");
    if (bytes && kl && plan && *kl > 0)
      points.push_back({plan->str(), *bytes, *kl, *kvprec});
  }
  os << "<g><text x=\"" << x0 << "\" y=\"" << y0 - 8
     << "\" font-size=\"12\">bytes vs fp16 against mean KL on held-out "
        "prompts (bench/quality, "
     << (model.empty() ? StringRef("all models") : model) << ")</text>\n";
  os << "<rect x=\"" << x0 << "\" y=\"" << y0 << "\" width=\"" << w
     << "\" height=\"" << h << "\" fill=\"none\" stroke=\"#444\"/>\n";
  if (points.empty()) {
    os << "<text x=\"" << x0 + 8 << "\" y=\"" << y0 + 20
       << "\">no measured plans in " << path << "</text></g>\n";
    return;
  }
  double xMax = 0, yMin = 1e300, yMax = -1e300;
  for (const Point &p : points) {
    xMax = std::max(xMax, p.bytes);
    yMin = std::min(yMin, std::log10(p.kl));
    yMax = std::max(yMax, std::log10(p.kl));
  }
  xMax = std::ceil(xMax * 4 + 0.5) / 4;
  yMin = std::floor(yMin);
  yMax = std::ceil(yMax);
  if (yMax <= yMin)
    yMax = yMin + 1;
  auto px = [&](double b) { return x0 + b / xMax * w; };
  auto py = [&](double kl) {
    return y0 + h - (std::log10(kl) - yMin) / (yMax - yMin) * h;
  };
  for (double b = 0; b <= xMax + 1e-9; b += 0.25)
    os << llvm::format("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">"
                       "%.2f</text>\n",
                       px(b), y0 + h + 14, b);
  for (double e = yMin; e <= yMax; e += 1)
    os << llvm::format("<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">"
                       "1e%d</text>\n",
                       x0 - 4, py(std::pow(10.0, e)) + 4, int(e));
  // Baselines first and larger: a kvprec plan at a baseline's point (the
  // plan made at its bytes can be the same plan) shows as a blue dot in a
  // red ring, not one hiding the other.
  for (bool kvprec : {false, true})
    for (const Point &p : points)
      if (p.kvprec == kvprec)
        os << llvm::format("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" "
                           "fill=\"%s\"><title>",
                           px(p.bytes), py(p.kl), kvprec ? "3.5" : "5.5",
                           kvprec ? "#2166ac" : "#b2182b")
           << p.plan
           << llvm::format(": %.3f of fp16, mean KL %.3g", p.bytes, p.kl)
           << "</title></circle>\n";
  // Labels at font-size 9: about 5 px a character, 10 px tall. Each goes
  // right of its point, moved up or down a line at a time until its box
  // meets no label already placed (points often share bytes: a baseline and
  // the plan made at its bytes), with a leader line when moved.
  struct Box {
    double x0, y0, x1, y1;
    bool overlaps(const Box &o) const {
      return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1;
    }
  };
  // The points are obstacles too: a label over another plan's point hides
  // it.
  std::vector<Box> placed;
  for (const Point &p : points) {
    double r = p.kvprec ? 3.5 : 5.5;
    placed.push_back(
        {px(p.bytes) - r, py(p.kl) - r, px(p.bytes) + r, py(p.kl) + r});
  }
  for (const Point &p : points) {
    double cx = px(p.bytes), cy = py(p.kl);
    double lx = cx + 8, width = 5.0 * p.plan.size();
    auto boxAt = [&](double baseline) {
      return Box{lx, baseline - 8, lx + width, baseline + 2};
    };
    // Offsets 0, +11, -11, +22, -22, ... within the frame; if every one
    // overlaps, the one that overlaps the fewest labels.
    double best = cy + 3;
    size_t fewest = SIZE_MAX;
    for (int k = 0; k <= 40 && fewest; ++k) {
      double baseline = cy + 3 + (k % 2 ? 1 : -1) * 11.0 * ((k + 1) / 2);
      // Moved labels stay inside the frame.
      if (k && (baseline < y0 + 9 || baseline > y0 + h - 2))
        continue;
      Box box = boxAt(baseline);
      size_t hits = llvm::count_if(
          placed, [&](const Box &other) { return box.overlaps(other); });
      if (hits < fewest) {
        fewest = hits;
        best = baseline;
      }
    }
    placed.push_back(boxAt(best));
    if (std::abs(best - (cy + 3)) > 0.5)
      os << llvm::format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                         "y2=\"%.1f\" stroke=\"#888\" stroke-width=\"0.5\"/>\n",
                         cx + 3, cy, lx - 1, best - 3);
    os << llvm::format("<text class=\"plot-label\" x=\"%.1f\" y=\"%.1f\" "
                       "font-size=\"9\">",
                       lx, best)
       << p.plan << "</text>\n";
  }
  os << "<text x=\"" << x0 << "\" y=\"" << y0 + h + 30
     << "\">blue: kvprec plans (certified and measured-budget); red: "
        "baselines</text></g>\n";
}

static void printSvg(raw_ostream &os, const CacheReport &report,
                     const std::optional<QualityResults> &quality) {
  const cf::Plan &plan = report.plan;
  const cf::Geometry &g = plan.geometry;
  const int64_t L = g.layers, H = g.heads;
  // Formats ranked by bits, the order of the legend.
  std::vector<std::pair<double, int>> ranked;
  for (size_t f = 0; f < plan.formats.size(); ++f)
    ranked.push_back(
        {formatBits(plan.formats[f], std::max<int64_t>(g.block, 1), g.headDim),
         int(f)});
  std::sort(ranked.begin(), ranked.end());
  // A fixed colour per element kind (shades within one kind).
  std::vector<std::string> colour = getFormatColours(plan.formats, ranked);
  auto formatIndex = [&](const an::StorageFormat &f) {
    for (size_t i = 0; i < plan.formats.size(); ++i)
      if (plan.formats[i] == f)
        return int(i);
    return 0;
  };
  // The format of (item, class); per-block bodies: the one holding most
  // blocks (the by-block panels below show them all).
  auto classFormat = [&](int64_t item, int segment) {
    if (segment == cf::kSink)
      return formatIndex(plan.getSink(item));
    if (segment == cf::kWindow)
      return formatIndex(plan.getWindow(item));
    if (!plan.perBlock)
      return formatIndex(plan.getBody(item, 0));
    std::map<int, int64_t> counts;
    int64_t blocks = g.getNumBodyBlocks();
    for (int64_t b = 0; b < blocks; ++b)
      ++counts[formatIndex(plan.getBody(item, b))];
    return std::max_element(
               counts.begin(), counts.end(),
               [](auto &a, auto &b) { return a.second < b.second; })
        ->first;
  };

  // Cells sized so 80 layers x 8 heads stay readable on one page.
  const int cell =
      int(std::clamp<int64_t>(640 / std::max<int64_t>(L, 1), 6, 18));
  const int panelW = int(H) * cell, gap = 24, left = 56, top = 110;
  const int panelsW = 6 * panelW + 5 * gap + (gap * 2);
  const int legendW = 260;
  int width = left + panelsW + legendW;
  int gridH = int(L) * cell;
  const int64_t blocks = plan.perBlock ? g.getNumBodyBlocks() : 0;
  const int blockW = blocks ? int(std::clamp<int64_t>(600 / blocks, 2, 14)) : 0;
  const int itemH =
      blocks ? int(std::clamp<int64_t>(720 / std::max<int64_t>(L * H, 1), 1, 8))
             : 0;
  const int blockPanelW = blocks ? std::max(int(blocks) * blockW + 40, 160) : 0;
  // The legend (a swatch per format and three lines of scale) beside the
  // grids; what is drawn below starts under it where it would reach it.
  const int lx = left + panelsW + 10;
  const int legendBottom = top + int(ranked.size()) * 20 + 40;
  int blockPanelsY = top + gridH + 70;
  if (blocks && left + 2 * blockPanelW > lx)
    blockPanelsY = std::max(blockPanelsY, legendBottom + 20);
  int blockH = blocks ? int(L * H) * itemH : 0;
  int plotY =
      std::max(blockPanelsY + (blocks ? blockH + 60 : 0), legendBottom + 10);
  // The plot: room for a few dozen plans and, right of it, their labels.
  const int plotW = 760, plotH = 340, plotLabelsW = 180;
  int height = plotY + (!quality ? 20 : plotH + 80);
  width = std::max(width, left + 2 * blockPanelW + legendW);
  if (quality)
    width = std::max(width, left + 40 + plotW + plotLabelsW);
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
     << "\" height=\"" << height
     << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  // Title: the cache, its bytes and its certificate.
  os << "<text x=\"8\" y=\"20\" font-size=\"15\" font-weight=\"bold\">"
     << "kvprec precision map: " << report.name << "</text>\n";
  os << "<text x=\"8\" y=\"40\" font-size=\"12\">"
     << llvm::format("%.0f bytes, %.3f of fp16, %.2f bits per element",
                     report.bytes, report.bytes / report.f16Bytes,
                     report.bytes * 8 /
                         (report.f16Bytes / 2 > 0 ? report.f16Bytes / 2 : 1))
     << "</text>\n";
  os << "<text x=\"8\" y=\"58\" font-size=\"12\">";
  if (report.certificate) {
    CertificateRecord c = readCertificateAttr(report.certificate);
    os << llvm::format("certified bound %.3g (%s)", c.bound,
                       c.probabilistic ? "probabilistic" : "deterministic");
    if (!c.tolerances.empty()) {
      os << ", tolerance ";
      for (size_t i = 0; i < c.tolerances.size(); ++i)
        os << (i ? "," : "") << llvm::format("%.3g", c.tolerances[i]);
    }
  } else {
    os << "no certificate";
  }
  os << "</text>\n";
  if (report.quality) {
    auto value = [&](StringRef key) {
      auto f = report.quality.getAs<FloatAttr>(key);
      return f ? f.getValueAsDouble() : std::nan("");
    };
    os << "<text x=\"8\" y=\"76\" font-size=\"12\">"
       << llvm::format("measured (not certified): mean KL %.3g, top-1 %.4f",
                       value("mean_kl"), value("top1_agreement"))
       << "</text>\n";
  }
  // Six layers x heads grids: K and V, sink, window, body.
  const char *classes[3] = {"sink", "window", "body"};
  for (int kv = 0; kv < 2; ++kv)
    for (int sgm = 0; sgm < cf::kNumSegments; ++sgm) {
      int x = left + (kv * 3 + sgm) * (panelW + gap) + (kv ? gap * 2 : 0);
      os << "<text x=\"" << x << "\" y=\"" << top - 8 << "\">"
         << (kv ? "V " : "K ") << classes[sgm] << "</text>\n";
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < H; ++h) {
          int64_t item = plan.getItem(l, h, kv);
          int f = classFormat(item, sgm);
          os << "<rect x=\"" << x + h * cell << "\" y=\"" << top + l * cell
             << "\" width=\"" << cell - 1 << "\" height=\"" << cell - 1
             << "\" fill=\"" << colour[f] << "\"><title>L" << l << " H" << h
             << (kv ? " V " : " K ") << classes[sgm] << ": "
             << describeFormat(plan.formats[f]) << "</title></rect>\n";
        }
    }
  // Layer labels every few rows, and the head axis.
  int every = int(std::max<int64_t>(1, (L + 19) / 20));
  for (int64_t l = 0; l < L; l += every)
    os << "<text x=\"" << left - 6 << "\" y=\"" << top + l * cell + cell - 2
       << "\" text-anchor=\"end\">L" << l << "</text>\n";
  os << "<text x=\"" << left << "\" y=\"" << top + gridH + 16
     << "\">columns: KV heads 0.." << H - 1 << "; rows: layers 0.." << L - 1
     << "</text>\n";
  if (plan.perBlock)
    os << "<text x=\"" << left << "\" y=\"" << top + gridH + 30
       << "\">body cells: the format of most of the blocks</text>\n";
  // Legend: every format, its colour and its bits.
  os << "<text x=\"" << lx << "\" y=\"" << top - 8
     << "\" font-weight=\"bold\">formats (bits per element)</text>\n";
  for (size_t r = 0; r < ranked.size(); ++r) {
    int f = ranked[r].second;
    int y = top + int(r) * 20;
    os << "<rect x=\"" << lx << "\" y=\"" << y
       << "\" width=\"14\" height=\"14\" "
       << "fill=\"" << colour[f] << "\" stroke=\"#333\"/>\n";
    os << "<text x=\"" << lx + 20 << "\" y=\"" << y + 11 << "\">"
       << describeFormat(plan.formats[f])
       << llvm::format(" (%.2f)", ranked[r].first) << "</text>\n";
  }
  // The scale, so that colours compare across pictures.
  int noteY = top + int(ranked.size()) * 20 + 12;
  os << "<text x=\"" << lx << "\" y=\"" << noteY
     << "\" font-size=\"9\">colour: the element kind, blue f32, f16, bf16,"
     << "</text>\n<text x=\"" << lx << "\" y=\"" << noteY + 11
     << "\" font-size=\"9\">green fp8, orange i8, i4, red i2; a lighter or"
     << "</text>\n<text x=\"" << lx << "\" y=\"" << noteY + 22
     << "\" font-size=\"9\">darker shade: another format of one kind</text>\n";
  // Per-block bodies along the position axis.
  if (blocks) {
    for (int kv = 0; kv < 2; ++kv) {
      int x = left + kv * blockPanelW;
      os << "<text x=\"" << x << "\" y=\"" << blockPanelsY - 8 << "\">"
         << (kv ? "V" : "K") << " body by block</text>\n";
      for (int64_t l = 0; l < L; ++l)
        for (int64_t h = 0; h < H; ++h) {
          int64_t item = plan.getItem(l, h, kv);
          int y = blockPanelsY + int(l * H + h) * itemH;
          for (int64_t b = 0; b < blocks; ++b)
            os << "<rect x=\"" << x + b * blockW << "\" y=\"" << y
               << "\" width=\"" << blockW << "\" height=\"" << itemH
               << "\" fill=\"" << colour[formatIndex(plan.getBody(item, b))]
               << "\"/>\n";
        }
    }
  }
  if (blocks)
    os << "<text x=\"" << left << "\" y=\"" << blockPanelsY + blockH + 16
       << "\">columns: body blocks in position order; rows: (layer, KV "
          "head)</text>\n";
  if (quality)
    printQualityPlot(os, *quality, report.model, left + 40, plotY + 30,
                     plotW, plotH);
  os << "</svg>\n";
}

void ReportPass::runOnOperation() {
  ModuleOp module = getOperation();
  // The quality results are read first, as every input file is: a regular
  // file of bounded size (a missing file was ignored, and /dev/zero read
  // until memory ran out).
  std::unique_ptr<llvm::MemoryBuffer> qualityBuffer;
  std::optional<QualityResults> qualityResults;
  if (!quality.empty()) {
    if (format != ReportFormat::Svg) {
      module.emitError("kvprec-report: quality= plots into the SVG report; "
                       "it takes format=svg");
      return signalPassFailure();
    }
    llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> buffer =
        ::kvprec::calib::openRegularFile(quality, "quality results file",
                                         uint64_t(256) << 20,
                                         /*isText=*/true);
    if (!buffer) {
      module.emitError() << "kvprec-report: "
                         << llvm::toString(buffer.takeError());
      return signalPassFailure();
    }
    qualityBuffer = std::move(*buffer);
    qualityResults = QualityResults{quality, qualityBuffer->getBuffer()};
  }
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
    report.plan = *plan;
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
      format == ReportFormat::Svg ? printSvg(os, report, qualityResults)
                                  : printTable(os, report);
  }
  os.flush();
}
