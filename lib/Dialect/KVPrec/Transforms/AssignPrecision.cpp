//===- AssignPrecision.cpp - choose formats and write the plan ------------===//
//
// Thin pass over kvprec/Certify: it turns options and calibration into an
// allocation request, and the chosen formats into a #kvprec.plan with its
// certificate in every cache type.
//
//===----------------------------------------------------------------------===//

#include "PassSupport.h"

#include "kvprec/Analysis/SeedHeuristic.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Certify/PlanCertifier.h"
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <limits>

namespace mlir::kvprec {
#define GEN_PASS_DEF_ASSIGNPRECISION
#include "kvprec/Dialect/KVPrec/Transforms/Passes.h.inc"
} // namespace mlir::kvprec

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;
namespace cf = ::kvprec::certify;

const char *mlir::kvprec::getAssignModeName(AssignMode mode) {
  switch (mode) {
  case AssignMode::Certified:
    return "certified";
  case AssignMode::Uniform:
    return "uniform";
  case AssignMode::Kivi:
    return "kivi";
  case AssignMode::Seed:
    return "seed";
  }
  return "unknown";
}

namespace {
struct AssignPrecisionPass
    : public mlir::kvprec::impl::AssignPrecisionBase<AssignPrecisionPass> {
  using Base::Base;

  void runOnOperation() override;

private:
  /// Everything that is the same for every cache: parsed options.
  struct Settings {
    std::vector<double> tolerances;
    QuantScheme scheme;
    an::QuantScheme analysisScheme;
    bool channelGroups;
    an::StorageKind scaleKind;
    std::vector<an::StorageKind> kinds;
  };
  LogicalResult parseSettings(Settings &settings);
  LogicalResult
  resolveGeometry(AllocOp alloc,
                  const std::optional<::kvprec::calib::CalibrationStats> &stats,
                  cf::Geometry &geometry);
  std::vector<an::StorageFormat> makeCandidates(const Settings &settings,
                                                const cf::Geometry &geometry);
  /// Builds the plan of one cache; emits located errors on `alloc`.
  FailureOr<PlanAttr>
  planCache(AllocOp alloc, CacheType cache,
            const std::optional<::kvprec::calib::CalibrationStats> &stats,
            const Settings &settings);
};
} // namespace

LogicalResult AssignPrecisionPass::parseSettings(Settings &settings) {
  ModuleOp module = getOperation();
  if (!(kl >= 0) || !std::isfinite(kl))
    return module.emitError() << "kvprec-assign-precision: kl must be "
                                 "positive and finite, got "
                              << kl.getValue();
  if (kl > 0 &&
      (!tolerance.empty() || budget > 0 || mode != AssignMode::Certified))
    return module.emitError()
           << "kvprec-assign-precision: kl= sets per-layer tolerances from "
              "the measured sensitivities; it takes mode=certified and "
              "neither tolerance= nor budget=";
  settings.tolerances.assign(tolerance.begin(), tolerance.end());
  if (settings.tolerances.empty())
    settings.tolerances.push_back(1e-3);
  for (double value : settings.tolerances)
    if (!(value > 0) || !std::isfinite(value))
      return module.emitError()
             << "kvprec-assign-precision: tolerance must be positive and "
                "finite, got "
             << value;
  settings.scheme = scheme;
  settings.analysisScheme = scheme == QuantScheme::symmetric
                                ? an::QuantScheme::Symmetric
                                : an::QuantScheme::Asymmetric;
  settings.channelGroups = granularity == GroupGranularity::Channel;
  std::optional<an::StorageKind> scaleKind = parseStorageKind(scale);
  if (!scaleKind || an::isScaledKind(*scaleKind))
    return module.emitError() << "kvprec-assign-precision: scale must be "
                                 "f16, bf16 or f32, got '"
                              << scale << "'";
  settings.scaleKind = *scaleKind;
  SmallVector<std::string> names(formats.begin(), formats.end());
  if (names.empty())
    names = {"f32", "f16", "bf16", "f8E4M3FN", "f8E5M2", "i8", "i4", "i2"};
  for (const std::string &name : names) {
    std::optional<an::StorageKind> kind = parseStorageKind(name);
    if (!kind)
      return module.emitError()
             << "kvprec-assign-precision: unknown format '" << name
             << "'; expected f32, f16, bf16, f8E4M3FN, f8E5M2, i8, i4 or i2";
    settings.kinds.push_back(*kind);
  }
  if (group < 0)
    return module.emitError()
           << "kvprec-assign-precision: group must be non-negative";
  // 0 and -1 select the defaults; other negative values are mistakes, not
  // requests for a default.
  if (block < 0)
    return module.emitError() << "kvprec-assign-precision: block must be "
                                 "positive (or 0 for the default), got "
                              << static_cast<int64_t>(block);
  if (sink < -1 || window < -1)
    return module.emitError()
           << "kvprec-assign-precision: sink and window must be non-negative "
              "(or -1 for the default), got sink="
           << static_cast<int64_t>(sink)
           << " window=" << static_cast<int64_t>(window);
  if (!(margin >= 1) || !std::isfinite(margin))
    return module.emitError() << "kvprec-assign-precision: margin must be "
                                 "finite and at least 1, got "
                              << margin.getValue();
  if (budget < 0 || !std::isfinite(budget))
    return module.emitError()
           << "kvprec-assign-precision: budget must be a non-negative byte "
              "count";
  // The value half's budget scales with e^-ecap and its bounds with
  // e^ecap: past about 709 they overflow a double, and far before that a
  // logit error allows any weight.
  if (!(logitErrorCap > 0) || !(logitErrorCap <= 100))
    return module.emitError() << "kvprec-assign-precision: ecap must be in "
                                 "(0, 100], got "
                              << logitErrorCap.getValue();
  if (mode == AssignMode::Kivi && bits != 2 && bits != 4)
    return module.emitError()
           << "kvprec-assign-precision: mode=kivi takes bits=2 or bits=4, got "
           << static_cast<int64_t>(bits);
  // Options a mode does not read are mistakes, not silently ignored.
  if (mode == AssignMode::Kivi &&
      (group != 0 || granularity != GroupGranularity::Token ||
       scheme != QuantScheme::asymmetric || scale != "f16" || !format.empty()))
    return module.emitError()
           << "kvprec-assign-precision: mode=kivi fixes its formats "
              "(asymmetric, f16 scales, keys in channel groups of 32 positions, "
              "values in token groups of up to 32 channels); group=, "
              "granularity=, scheme=, scale= and format= do not apply";
  if (mode != AssignMode::Kivi && bits != 4)
    return module.emitError()
           << "kvprec-assign-precision: bits= applies to mode=kivi only";
  if (mode != AssignMode::Uniform && !format.empty())
    return module.emitError()
           << "kvprec-assign-precision: format= applies to mode=uniform "
              "only (the other modes choose from formats=)";
  return success();
}

LogicalResult AssignPrecisionPass::resolveGeometry(
    AllocOp alloc,
    const std::optional<::kvprec::calib::CalibrationStats> &stats,
    cf::Geometry &geometry) {
  CacheType cache = alloc.getCache().getType();
  geometry = cf::Geometry();
  geometry.layers = cache.getLayers();
  geometry.heads = cache.getHeads();
  geometry.capacity = cache.getCapacity();
  geometry.headDim = cache.getHeadDim();
  // KIVI fixes its own layout: no sink, groups of 32 tokens, 128-token
  // window.
  bool kivi = mode == AssignMode::Kivi;
  geometry.block = block > 0 ? block
                   : kivi    ? 32
                   : stats   ? stats->shape.block
                             : 32;
  geometry.sink = sink >= 0 ? sink : kivi ? 0 : stats ? stats->shape.sink : 4;
  geometry.window = window >= 0 ? window
                    : kivi      ? 128
                    : stats     ? stats->shape.window
                                : 64;
  if (geometry.window % geometry.block != 0)
    return alloc.emitOpError()
           << "cannot take a plan with window " << geometry.window
           << ": it must be a multiple of the block size " << geometry.block;
  if (geometry.sink > geometry.capacity ||
      geometry.window > geometry.capacity - geometry.sink)
    return alloc.emitOpError()
           << "cannot take a plan with sink " << geometry.sink << " and window "
           << geometry.window << ": the cache holds only " << geometry.capacity
           << " positions";
  return success();
}

std::vector<an::StorageFormat>
AssignPrecisionPass::makeCandidates(const Settings &settings,
                                    const cf::Geometry &geometry) {
  std::vector<an::StorageFormat> candidates;
  int64_t tokenGroup =
      group > 0 && !settings.channelGroups ? group : geometry.headDim;
  int64_t channelGroup =
      group > 0 && settings.channelGroups ? group : geometry.block;
  for (an::StorageKind kind : settings.kinds) {
    if (!an::isScaledKind(kind)) {
      candidates.push_back(an::StorageFormat::unscaled(kind));
      continue;
    }
    an::QuantScheme scheme = an::isFp8Kind(kind) ? an::QuantScheme::Symmetric
                                                 : settings.analysisScheme;
    candidates.push_back(
        an::StorageFormat::scaled(kind, scheme, an::Granularity::TokenGroup,
                                  tokenGroup, settings.scaleKind));
    // Channel groups (KIVI's keys) for integer formats; token groups stay
    // available for classes the channel groups cannot tile (the sink).
    if (settings.channelGroups && an::isIntegerKind(kind))
      candidates.push_back(
          an::StorageFormat::scaled(kind, scheme, an::Granularity::ChannelGroup,
                                    channelGroup, settings.scaleKind));
  }
  return candidates;
}

/// Index of `format` in `table`, appending it when new.
static int8_t internFormat(std::vector<an::StorageFormat> &table,
                           const an::StorageFormat &format) {
  for (size_t i = 0; i < table.size(); ++i)
    if (table[i] == format)
      return static_cast<int8_t>(i);
  table.push_back(format);
  return static_cast<int8_t>(table.size() - 1);
}

/// Fills `plan` from per-(layer, head) formats (uniform bodies).
static void fillPlan(cf::Plan &plan,
                     const std::vector<cf::HeadFormats> &heads) {
  int64_t items = plan.getNumItems();
  plan.sinkFormats.assign(items, 0);
  plan.windowFormats.assign(items, 0);
  plan.bodyFormats.assign(items, 0);
  for (size_t flat = 0; flat < heads.size(); ++flat)
    for (int kv = 0; kv < 2; ++kv) {
      int64_t item = flat * 2 + kv;
      plan.sinkFormats[item] =
          internFormat(plan.formats, heads[flat][kv][cf::kSink]);
      plan.windowFormats[item] =
          internFormat(plan.formats, heads[flat][kv][cf::kWindow]);
      plan.bodyFormats[item] =
          internFormat(plan.formats, heads[flat][kv][cf::kBody]);
    }
}

/// The prototype's rule for one class: kappa = attention * recency *
/// gradient norm * sqrt(hessian trace), p = log2(c kappa D^2 / eps), then
/// its fixed thresholds. Its int formats were one absmax scale per token.
static an::StorageFormat seedFormat(const cf::HeadEnvelope &envelope,
                                    int segment, int kv, int64_t headDim,
                                    double tolerance) {
  double mass = envelope.mass[segment];
  double queryL1 = 0.0, maxSpan = 0.0, range = 0.0;
  for (double q : envelope.queryBound)
    queryL1 += q;
  for (double span : envelope.valueSpan)
    maxSpan = std::max(maxSpan, span);
  const an::BlockStatistics &stats =
      kv == 0 ? envelope.keys[segment] : envelope.values[segment];
  for (const an::ValueRange &r : stats.channelRanges)
    range = std::max(range, r.max - r.min);
  an::SeedPositionSignals signals;
  signals.attention = mass;
  // The prototype weighted recent positions up; the window and the sink it
  // kept whole, the body it discounted by half.
  signals.recency = segment == cf::kBody ? 0.5 : 1.0;
  double sqrtD = std::sqrt(double(headDim));
  signals.gradientNorm = kv == 0 ? maxSpan * queryL1 / sqrtD : 1.0;
  // The output is linear in V, so its Hessian in V vanishes.
  signals.hessianTrace = kv == 0 ? queryL1 * queryL1 / headDim * maxSpan : 0.0;
  double score = an::computeSeedScore(signals);
  double bitsNeeded =
      an::computeSeedPrecisionBits(1.0, score, range, tolerance);
  an::StorageKind kind = an::mapSeedBitsToStorageKind(bitsNeeded);
  if (!an::isScaledKind(kind))
    return an::StorageFormat::unscaled(kind);
  return an::StorageFormat::scaled(kind, an::QuantScheme::Symmetric,
                                   an::Granularity::TokenGroup, headDim,
                                   an::StorageKind::F16);
}

FailureOr<PlanAttr> AssignPrecisionPass::planCache(
    AllocOp alloc, CacheType cache,
    const std::optional<::kvprec::calib::CalibrationStats> &stats,
    const Settings &requested) {
  MLIRContext *context = &getContext();
  Settings settings = requested;
  if ((mode == AssignMode::Certified || mode == AssignMode::Seed) && !stats)
    return alloc.emitOpError()
           << "has no calibration: mode=" << getAssignModeName(mode)
           << " needs one (run --kvprec-import-calibration first, or use "
              "mode=uniform)";
  cf::Geometry geometry;
  if (failed(resolveGeometry(alloc, stats, geometry)))
    return failure();
  if (stats) {
    std::string problem = cf::checkGeometry(*stats, geometry);
    if (!problem.empty())
      return alloc.emitOpError()
             << "cannot use its calibration @"
             << alloc.getCalibrationAttr().getValue() << ": " << problem;
  }
  // kl=: per-layer tolerances from the measured downstream sensitivities
  // s_l (mean KL per squared error of the layer's attention outputs). With
  // errors e_l at the L layers, sqrt(KL) <= sum_l sqrt(s_l) e_l to first
  // order, so e_l = sqrt(kl / s_l) / L keeps it within sqrt(kl). Measured,
  // not certified; each layer's bound is then certified as usual.
  if (kl > 0) {
    if (!stats || stats->layerKLSensitivity.empty())
      return alloc.emitOpError()
             << "kl=" << kl.getValue()
             << " needs the calibration's measured layer sensitivities "
                "(layer_kl_sensitivity: kvprec-calib collect "
                "--sensitivity-error E)";
    settings.tolerances.clear();
    const double layers = double(geometry.layers);
    for (double sensitivity : stats->layerKLSensitivity)
      settings.tolerances.push_back(
          sensitivity > 0 ? std::min(1.0, std::sqrt(kl / sensitivity) / layers)
                          : 1.0);
  }
  if (settings.tolerances.size() != 1 &&
      settings.tolerances.size() != size_t(geometry.layers))
    return alloc.emitOpError()
           << "has " << geometry.layers << " layers but "
           << settings.tolerances.size() << " tolerances were given";

  // A group that does not tile its unit would make every scaled format
  // unstorable (and a group past 2^32 would wrap in the attribute).
  if (group > 0 && mode != AssignMode::Kivi) {
    int64_t unit = settings.channelGroups ? geometry.block : geometry.headDim;
    if (unit % group != 0)
      return alloc.emitOpError()
             << "cannot take group=" << static_cast<int64_t>(group) << ": "
             << (settings.channelGroups ? "channel groups must divide the block "
                                        : "token groups must divide head_dim ")
             << unit;
  }
  // A format holds its group size in 32 bits; the defaults (head_dim for
  // token groups, the block for channel groups) must fit it too, or the
  // size would wrap (to 0: a division by zero in the byte count).
  std::vector<an::StorageKind> planned = settings.kinds;
  if (mode == AssignMode::Uniform)
    if (std::optional<an::StorageKind> kind = parseStorageKind(format))
      planned = {*kind};
  bool anyScaled = llvm::any_of(
      planned, [](an::StorageKind kind) { return an::isScaledKind(kind); });
  if (anyScaled && mode != AssignMode::Kivi) {
    constexpr int64_t kMaxGroup = std::numeric_limits<uint32_t>::max();
    int64_t tokenGroup =
        group > 0 && !settings.channelGroups ? group : geometry.headDim;
    int64_t channelGroup =
        group > 0 && settings.channelGroups ? group : geometry.block;
    if (tokenGroup > kMaxGroup ||
        (settings.channelGroups && channelGroup > kMaxGroup))
      return alloc.emitOpError()
             << "cannot take scaled formats with groups of "
             << std::max(tokenGroup, settings.channelGroups ? channelGroup : 0)
             << " elements: a format holds at most " << kMaxGroup
             << " (choose group=)";
  }

  cf::CertifyOptions certifyOptions;
  certifyOptions.logitErrorCap = logitErrorCap;
  certifyOptions.extrapolation = extrapolate;
  certifyOptions.extrapolationMargin = margin;
  certifyOptions.certificate = certificate;
  certifyOptions.failureProbability = confidence;
  if (certificate == cf::CertificateKind::Probabilistic &&
      !(confidence > 0.0 && confidence < 1.0))
    return alloc.emitOpError()
           << "certificate=probabilistic needs a failure probability "
              "confidence in (0, 1), got "
           << confidence.getValue();
  FailureOr<double> softmaxScale = getCacheSoftmaxScale(alloc);
  if (failed(softmaxScale))
    return failure();
  certifyOptions.softmaxScale = *softmaxScale;
  if (stats) {
    if (std::string problem =
            cf::checkCoverage(*stats, geometry, certifyOptions);
        !problem.empty())
      return alloc.emitOpError()
             << "cannot be certified from calibration @"
             << alloc.getCalibrationAttr().getValue() << ": " << problem;
  }
  cf::Plan plan;
  plan.geometry = geometry;
  int64_t heads = geometry.layers * geometry.heads;
  std::vector<cf::HeadFormats> headFormats(heads);
  auto toleranceOf = [&](int64_t flat) {
    return settings.tolerances.size() == 1
               ? settings.tolerances[0]
               : settings.tolerances[flat / geometry.heads];
  };

  if (mode == AssignMode::Uniform) {
    std::optional<an::StorageKind> kind = parseStorageKind(format);
    if (!kind)
      return alloc.emitOpError()
             << "mode=uniform needs format=T with T one of f32, f16, bf16, "
                "f8E4M3FN, f8E5M2, i8, i4, i2; got '"
             << format << "'";
    Settings one = settings;
    one.kinds = {*kind};
    std::vector<an::StorageFormat> candidates = makeCandidates(one, geometry);
    an::StorageFormat chosen = candidates.back();
    // Channel groups run over positions: a sink they do not tile keeps the
    // token-group form of the same format (makeCandidates lists it first).
    an::StorageFormat sinkFormat = chosen;
    if (chosen.granularity == an::Granularity::ChannelGroup &&
        geometry.sink % chosen.groupSize != 0)
      sinkFormat = candidates.front();
    for (cf::HeadFormats &f : headFormats)
      for (auto &kv : f) {
        kv.fill(chosen);
        kv[cf::kSink] = sinkFormat;
      }
  } else if (mode == AssignMode::Kivi) {
    an::StorageKind kind =
        bits == 2 ? an::StorageKind::Int2 : an::StorageKind::Int4;
    an::StorageFormat keys = an::StorageFormat::scaled(
        kind, an::QuantScheme::Asymmetric, an::Granularity::ChannelGroup, 32,
        an::StorageKind::F16);
    an::StorageFormat values = an::StorageFormat::scaled(
        kind, an::QuantScheme::Asymmetric, an::Granularity::TokenGroup,
        std::min<int64_t>(32, geometry.headDim), an::StorageKind::F16);
    an::StorageFormat f16 = an::StorageFormat::unscaled(an::StorageKind::F16);
    if (geometry.block % 32 != 0)
      return alloc.emitOpError() << "mode=kivi needs a block that is a "
                                    "multiple of KIVI's 32-token key groups";
    if (geometry.headDim % values.groupSize != 0)
      return alloc.emitOpError() << "mode=kivi: head_dim " << geometry.headDim
                                 << " is not a multiple of 32";
    for (cf::HeadFormats &f : headFormats) {
      f[0] = {f16, f16, keys};
      f[1] = {f16, f16, values};
    }
  } else if (mode == AssignMode::Seed) {
    for (int64_t flat = 0; flat < heads; ++flat) {
      cf::HeadEnvelope envelope =
          cf::buildHeadEnvelope(*stats, geometry, flat / geometry.heads,
                                flat % geometry.heads, certifyOptions);
      for (int kv = 0; kv < 2; ++kv)
        for (int segment = 0; segment < cf::kNumSegments; ++segment)
          headFormats[flat][kv][segment] = seedFormat(
              envelope, segment, kv, geometry.headDim, toleranceOf(flat));
    }
  }
  // A budget with measured layer sensitivities spends its bytes where they
  // lower sum_l sqrt(s_l) e_l, the first-order sqrt(KL) that kl= plans by,
  // rather than the plain sum of the heads' bounds (the calibration op's
  // verifier keeps one sensitivity per layer).
  std::vector<double> layerWeights;
  if (mode == AssignMode::Certified && budget > 0) {
    double largest = 0.0;
    for (double s : stats->layerKLSensitivity)
      largest = std::max(largest, std::sqrt(std::max(s, 0.0)));
    if (largest > 0)
      for (double s : stats->layerKLSensitivity)
        layerWeights.push_back(
            std::max(std::sqrt(std::max(s, 0.0)) / largest, 1e-6));
  }
  if (mode == AssignMode::Certified) {
    cf::AllocationRequest request;
    request.geometry = geometry;
    request.tolerances = settings.tolerances;
    request.budgetBytes = budget;
    request.layerWeights = layerWeights;
    request.keyCandidates = makeCandidates(settings, geometry);
    request.valueCandidates = request.keyCandidates;
    request.options = certifyOptions;
    cf::AllocationOutcome outcome;
    if (an::Status status = cf::allocatePlan(*stats, request, outcome);
        status.failed())
      return alloc.emitOpError()
             << "cannot be planned: " << status.getMessage();
    headFormats = std::move(outcome.formats);
    fillPlan(plan, headFormats);
    if (perBlock) {
      int64_t blocks = geometry.getNumBodyBlocks();
      std::vector<int8_t> body(plan.getNumItems() * blocks);
      for (int64_t flat = 0; flat < heads; ++flat) {
        cf::HeadEnvelope envelope =
            cf::buildHeadEnvelope(*stats, geometry, flat / geometry.heads,
                                  flat % geometry.heads, certifyOptions);
        for (int kv = 0; kv < 2; ++kv) {
          const std::vector<an::StorageFormat> &candidates =
              kv == 0 ? request.keyCandidates : request.valueCandidates;
          std::vector<int> chosen;
          if (an::Status status =
                  cf::refineBodyBlocks(*stats, geometry, flat / geometry.heads,
                                       flat % geometry.heads, kv, envelope,
                                       headFormats[flat][kv][cf::kWindow],
                                       headFormats[flat][kv][cf::kBody],
                                       candidates, certifyOptions, chosen);
              status.failed())
            return alloc.emitOpError()
                   << "cannot refine body blocks: " << status.getMessage();
          for (int64_t b = 0; b < blocks; ++b)
            body[(flat * 2 + kv) * blocks + b] =
                internFormat(plan.formats, candidates[chosen[b]]);
        }
      }
      plan.bodyFormats = std::move(body);
      plan.perBlock = true;
    }
  }
  if (plan.formats.empty())
    fillPlan(plan, headFormats);

  // Every format must be one the dialect can store for this cache.
  for (const an::StorageFormat &f : plan.formats) {
    if (an::getBitWidth(f.kind) >
        cache.getElementType().getIntOrFloatBitWidth())
      return alloc.emitOpError()
             << "cannot store its " << cache.getElementType()
             << " elements in the wider format " << describeFormat(f);
  }

  double elements = double(geometry.layers) * geometry.heads * 2 *
                    geometry.capacity * geometry.headDim;
  double bytes = plan.getTotalBytes();
  // Pass statistics only print in LLVM builds with statistics enabled
  // (Debian's release build has them off), so the totals are also a remark.
  planBytes += static_cast<uint64_t>(bytes);
  f16Bytes += static_cast<uint64_t>(elements * 2);
  averageMilliBits = static_cast<uint64_t>(bytes * 8 / elements * 1000);
  ++numCaches;
  if (!quiet) {
    InFlightDiagnostic remark = alloc.emitRemark();
    remark << "kvprec-assign-precision (mode=" << getAssignModeName(mode)
           << "): "
           << llvm::formatv("{0:F0} bytes, {1:F4} of fp16, {2:F3} bits per "
                            "element",
                            bytes, bytes / (elements * 2), bytes * 8 / elements)
                  .str();
    if (kl > 0) {
      remark << "; kl=" << kl.getValue() << ": per-layer tolerances [";
      llvm::interleaveComma(settings.tolerances, remark, [&](double t) {
        remark << llvm::formatv("{0:e3}", t).str();
      });
      remark << "] from the measured layer sensitivities (the propagation "
                "to the logits is measured, not certified; each layer's "
                "bound is certified at its tolerance)";
    }
    if (!layerWeights.empty())
      remark << "; budget spent by the measured layer sensitivities "
                "(errors weighted by sqrt(s_l))";
  }

  // Certify the plan exactly as it will be stored (a per-block list whose
  // blocks agree is stored per item, and then certified per item).
  plan = *toPlainPlan(cache.withPlan(buildPlanAttr(context, plan, {})));
  CertificateAttr certificate;
  if (stats) {
    // Budget mode records its budget, and uniform and KIVI plans made
    // without a tolerance the bounds they achieve, not a tolerance nobody
    // gave.
    bool budgetMode = mode == AssignMode::Certified && budget > 0;
    bool ownBounds =
        (mode == AssignMode::Uniform || mode == AssignMode::Kivi) &&
        tolerance.empty();
    FailureOr<ComputedCertificate> computed = computeCertificate(
        alloc, *stats, plan, certifyOptions,
        budgetMode || ownBounds ? std::vector<double>() : settings.tolerances,
        budgetMode ? double(budget) : 0.0);
    if (failed(computed))
      return failure();
    // The bounds it achieves are its tolerances; the necessary bits are
    // then taken at those tolerances, as verify recomputes them.
    if (ownBounds)
      computed = computeCertificate(alloc, *stats, plan, certifyOptions,
                                    computed->record.layerBounds, 0.0);
    if (failed(computed))
      return failure();
    // The allocator's decoupled bound is never below the certificate; this
    // guards the per-block refinement, which relies on monotone error
    // models.
    if (mode == AssignMode::Certified && !budgetMode)
      for (int64_t flat = 0; flat < heads; ++flat)
        if (computed->headBounds[flat] > toleranceOf(flat))
          return alloc.emitOpError()
                 << "plan of layer " << flat / geometry.heads << ", KV head "
                 << flat % geometry.heads << " certifies only "
                 << computed->headBounds[flat] << ", above the tolerance "
                 << toleranceOf(flat);
    certificate = buildCertificateAttr(context, computed->record);
  }
  // Attributes and types are built unchecked: verify the plan here, so that
  // one the dialect cannot hold is an error at the alloc, not output that
  // fails to parse.
  PlanAttr planAttr = buildPlanAttr(context, plan, certificate);
  auto emitError = [&] {
    return alloc.emitOpError() << "cannot hold the plan built for it: ";
  };
  if (failed(PlanAttr::verify(
          emitError, planAttr.getLayers(), planAttr.getHeads(),
          planAttr.getCapacity(), planAttr.getBlock(), planAttr.getSink(),
          planAttr.getWindow(), planAttr.getFormats(),
          planAttr.getSinkFormats(), planAttr.getBodyFormats(),
          planAttr.getWindowFormats(), planAttr.getCertificate())) ||
      failed(CacheType::verify(emitError, cache.getLayers(), cache.getHeads(),
                               cache.getCapacity(), cache.getHeadDim(),
                               cache.getElementType(), planAttr)))
    return failure();
  return planAttr;
}

void AssignPrecisionPass::runOnOperation() {
  ModuleOp module = getOperation();
  Settings settings;
  if (failed(parseSettings(settings)))
    return signalPassFailure();
  FailureOr<std::vector<CalibratedAlloc>> allocs =
      collectCalibratedAllocs(module);
  if (failed(allocs))
    return signalPassFailure();
  if (allocs->empty()) {
    module.emitError("kvprec-assign-precision: the module has no kvprec.alloc "
                     "to plan");
    return signalPassFailure();
  }
  // One plan per cache type (without its old plan): every value of that
  // type, in any function signature, gets it.
  llvm::MapVector<CacheType, PlanAttr> plans;
  for (CalibratedAlloc &entry : *allocs) {
    CacheType base = entry.alloc.getCache().getType().withPlan({});
    if (plans.count(base))
      continue;
    FailureOr<PlanAttr> plan =
        planCache(entry.alloc, base, entry.stats, settings);
    if (failed(plan))
      return signalPassFailure();
    plans[base] = *plan;
  }
  replaceCacheTypes(module, [&](CacheType type) -> CacheType {
    auto it = plans.find(type.withPlan({}));
    return it == plans.end() ? CacheType() : type.withPlan(it->second);
  });
}
