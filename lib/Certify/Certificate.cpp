//===- Certificate.cpp - the static certificate of a head -------------------===//
//
// The §2 bound over class envelopes (coordinate-wise, or joint over query
// samples), the kernel's accumulation error, and the certificate of one
// (layer, KV head) of a plan.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "CertifyInternal.h"

#include "kvprec/Analysis/Sensitivity.h"
#include "kvprec/Certify/Plan.h"

#include <algorithm>
#include <map>
#include <optional>
#include <cmath>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
using namespace kvprec::certify::detail;
namespace an = kvprec::analysis;
using calib::CalibrationStats;

/// x * y for non-negative factors where a zero factor wins: e^E dV with
/// dV = 0 is an exact term, not inf * 0 = NaN.
static double scaleTerm(double x, double y) {
  return x == 0.0 || y == 0.0 ? 0.0 : x * y;
}

std::vector<double> certify::getKernelAccumulationError(
    const HeadEnvelope &envelope, const Geometry &geometry,
    const CertifyOptions &options, const std::vector<double> &maxValueError) {
  std::vector<double> result(envelope.valueMagnitude.size(), 0.0);
  if (!options.kernel.enabled)
    return result;
  const double u = 0x1p-24;
  int64_t block = options.kernel.accumulateBlock > 0
                      ? options.kernel.accumulateBlock
                      : std::max<int64_t>(geometry.block, 1);
  // Blocked sums: block - 1 additions in a block, then one rescale and
  // ceil(T / block) - 1 additions across blocks.
  double terms = double(std::min(block, geometry.capacity)) +
                 double(ceilDiv(geometry.capacity, block));
  double gammaSum = an::computeGamma(terms, u);
  double gammaAccumulate = an::computeGamma(terms + 1, u);
  // The computed normalised weights against the exactly normalised ones
  // (the sum of positive weights, then the division), then the weighted sum
  // of values: |o~_j - o'_j| <= factor * sum_t a'_t |V^_{t,j}|.
  // (checkCoverage refuses geometries where gammaSum >= 1; the factor is
  // infinite there, never a negative or NaN that would hide the bound.)
  double weightError =
      gammaSum < 1 ? (1 + u) / (1 - gammaSum) - 1 : INFINITY;
  double factor = weightError + gammaAccumulate * (1 + weightError);
  if (!std::isfinite(factor)) {
    std::fill(result.begin(), result.end(), INFINITY);
    return result;
  }
  for (size_t j = 0; j < result.size(); ++j)
    result[j] = factor * (envelope.valueMagnitude[j] +
                          (j < maxValueError.size() ? maxValueError[j] : 0.0));
  return result;
}

const char *certify::getCertificateKindName(CertificateKind kind) {
  return kind == CertificateKind::Deterministic ? "deterministic"
                                                 : "probabilistic";
}

ConcentrationLevels certify::getConcentrationLevels(double stepFailure,
                                                    int64_t attentionHeads,
                                                    int64_t capacity,
                                                    int64_t headDim) {
  // Hoeffding: P(|S| > lambda sigma) <= 2 exp(-lambda^2 / 2) for a sum of
  // independent bounded terms with sigma^2 the sum of their squared bounds;
  // a union bound over n such sums at failure p needs
  // lambda = sqrt(2 ln(2 n / p)).
  double p = stepFailure / (3.0 * double(std::max<int64_t>(attentionHeads, 1)));
  auto level = [&](int64_t n) {
    return std::sqrt(2.0 * std::log(2.0 * double(std::max<int64_t>(n, 1)) / p));
  };
  ConcentrationLevels levels;
  levels.logit = level(capacity);
  levels.value = level(headDim);
  levels.key = level(headDim);
  return levels;
}

namespace {
/// What the probabilistic certificate of one query needs of a class: its
/// logit bound E~ = min(E, lambda_1 sigma) (with the kernel's rounding),
/// the Hoeffding deviation sigma of its storage error and the kernel's
/// share of E~.
struct ProbabilisticLogit {
  double bound = 0.0, deviation = 0.0, kernel = 0.0;
};
} // namespace

static ProbabilisticLogit
getProbabilisticLogit(const std::vector<KeyLogitModel> &models,
                      const std::vector<double> &absQuery, double lambda,
                      const ConcentrationLevels &levels) {
  ProbabilisticLogit result;
  for (const KeyLogitModel &model : models) {
    double deviation = model.evaluateDeviation(absQuery);
    double storage = std::min(model.evaluateStorage(absQuery, lambda),
                              levels.logit * deviation);
    double kernel = model.evaluateKernel(absQuery, lambda, storage);
    result.bound = std::max(result.bound, storage + kernel);
    result.deviation = std::max(result.deviation, deviation);
    result.kernel = std::max(result.kernel, kernel);
  }
  return result;
}

/// The §9 bound of one query (its class masses and sums of squared weights)
/// on the event that every concentration inequality holds: each of the
/// value and key parts is the smaller of its Hoeffding form and its §2 form
/// at E~, and the whole the smaller of their sum and the §2 bound at E~.
static Status computeProbabilisticBound(
    const std::vector<an::PositionClassEnvelope> &classes,
    const std::vector<ProbabilisticLogit> &logits,
    const std::vector<double> &squares, const std::vector<double> &valueSpan,
    const ConcentrationLevels &levels, an::StaticCertifiedBound &result) {
  std::vector<an::PositionClassEnvelope> atBound = classes;
  std::vector<double> masses, tilde, kernel, remainder;
  for (size_t c = 0; c < classes.size(); ++c) {
    atBound[c].maxLogitError = logits[c].bound;
    masses.push_back(std::min(classes[c].attentionMass, 1.0));
    tilde.push_back(logits[c].bound);
    kernel.push_back(logits[c].kernel);
    // e^x - 1 - x, the remainder of the linearisation.
    remainder.push_back(std::expm1(logits[c].bound) - logits[c].bound);
  }
  if (Status status = computeClassBound(atBound, valueSpan, result);
      status.failed())
    return status;
  double meanLogit = result.meanLogitErrorBound;
  double growth = std::exp(meanLogit);
  double keyDeviation = 0.0;
  for (size_t c = 0; c < classes.size(); ++c)
    keyDeviation += squares[c] * logits[c].deviation * logits[c].deviation;
  keyDeviation = std::sqrt(keyDeviation);
  double kernelShare = maximizeOverEnvelope(masses, kernel);
  double remainderShare = maximizeOverEnvelope(masses, remainder);
  result.infNorm = 0.0;
  for (size_t j = 0; j < valueSpan.size(); ++j) {
    // Key part: e^{Ebar~} [lambda_3 (sum_t a_t^2 R^2 sigma_t^2)^{1/2} +
    // sum_t a_t (kernel_t + e^{E~_t} - 1 - E~_t) R], R <= span_j.
    double keyTerm = scaleTerm(
        scaleTerm(growth, valueSpan[j]),
        scaleTerm(levels.key, keyDeviation) + kernelShare + remainderShare);
    // Value part: lambda_2 (sum_t a^_t^2 deltaV^2)^{1/2} with
    // a^_t <= a_t e^{E~_t + Ebar~}.
    double valueDeviation = 0.0;
    for (size_t c = 0; c < classes.size(); ++c) {
      double grown =
          scaleTerm(std::exp(tilde[c] + meanLogit), classes[c].maxValueError[j]);
      valueDeviation += scaleTerm(squares[c], grown * grown);
    }
    double valueTerm = scaleTerm(levels.value, std::sqrt(valueDeviation));
    keyTerm = std::min(keyTerm, result.keyTerm[j]);
    valueTerm = std::min(valueTerm, result.valueTerm[j]);
    result.keyTerm[j] = keyTerm;
    result.valueTerm[j] = valueTerm;
    result.perComponent[j] = std::min(result.perComponent[j], keyTerm + valueTerm);
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
  }
  return Status::success();
}

Status certify::finishCertificate(
    const HeadEnvelope &envelope, const Geometry &geometry,
    const CertifyOptions &options,
    const std::vector<an::PositionClassEnvelope> &classes,
    const std::vector<std::vector<KeyLogitModel>> &keyModels,
    an::StaticCertifiedBound &result) {
  bool probabilistic = options.certificate == CertificateKind::Probabilistic;
  if ((probabilistic || !envelope.samples.empty()) &&
      keyModels.size() != classes.size())
    return Status::failure("the joint and probabilistic certificates need "
                           "the key models of every class");
  // The bound of one query (or of the envelope) with class masses `masses`,
  // sums of squared weights `squares`, |q| and logit envelope.
  std::vector<an::PositionClassEnvelope> perQuery = classes;
  auto boundOf = [&](const std::vector<double> &masses,
                     const std::vector<double> &squares,
                     const std::vector<double> &absQuery, double lambda,
                     an::StaticCertifiedBound &one) -> Status {
    for (size_t c = 0; c < classes.size(); ++c)
      perQuery[c].attentionMass = masses[c];
    if (!probabilistic) {
      for (size_t c = 0; c < classes.size(); ++c) {
        double e = 0.0;
        for (const KeyLogitModel &model : keyModels[c])
          e = std::max(e, model.evaluate(absQuery, lambda));
        perQuery[c].maxLogitError = keyModels[c].empty()
                                        ? classes[c].maxLogitError
                                        : e;
      }
      return computeClassBound(perQuery, envelope.valueSpan, one);
    }
    std::vector<ProbabilisticLogit> logits;
    for (size_t c = 0; c < classes.size(); ++c)
      logits.push_back(getProbabilisticLogit(keyModels[c], absQuery, lambda,
                                             envelope.levels));
    return computeProbabilisticBound(perQuery, logits, squares,
                                     envelope.valueSpan, envelope.levels, one);
  };

  if (envelope.samples.empty()) {
    // Coordinate-wise: the class envelopes, and sum_{t in c} a_t^2 <=
    // max_t a_t * mass_c.
    std::vector<double> masses, squares;
    for (const an::PositionClassEnvelope &cls : classes) {
      double mass = std::min(cls.attentionMass, 1.0);
      masses.push_back(mass);
      squares.push_back(std::min(mass * mass, envelope.maxWeight * mass));
    }
    if (!probabilistic) {
      if (Status status =
              computeClassBound(classes, envelope.valueSpan, result);
          status.failed())
        return status;
    } else if (Status status = boundOf(masses, squares, envelope.queryBound,
                                       envelope.logitEnvelope, result);
               status.failed())
      return status;
  } else {
    // The joint certificate (error-bounds.md §7): the bound of each sampled
    // query, with its masses, |q| and logit envelope, and the class-wide
    // value errors (C3); the largest over the samples.
    an::StaticCertifiedBound joint;
    size_t dims = envelope.valueSpan.size();
    joint.perComponent.assign(dims, 0.0);
    joint.valueTerm.assign(dims, 0.0);
    joint.keyTerm.assign(dims, 0.0);
    for (const QuerySample &q : envelope.samples) {
      // The classes' masses for this query (in the order of `classes`,
      // which lists the present segments in order).
      std::vector<double> masses, squares;
      for (const an::PositionClassEnvelope &cls : classes) {
        masses.push_back(cls.segment >= 0 ? q.mass[cls.segment] : 1.0);
        squares.push_back(cls.segment >= 0 ? q.squares[cls.segment] : 1.0);
      }
      an::StaticCertifiedBound one;
      if (Status status = boundOf(masses, squares, q.absQuery, q.logitEnvelope,
                                  one);
          status.failed())
        return status;
      joint.meanLogitErrorBound =
          std::max(joint.meanLogitErrorBound, one.meanLogitErrorBound);
      for (size_t j = 0; j < dims; ++j) {
        joint.perComponent[j] = std::max(joint.perComponent[j],
                                         one.perComponent[j]);
        joint.valueTerm[j] = std::max(joint.valueTerm[j], one.valueTerm[j]);
        joint.keyTerm[j] = std::max(joint.keyTerm[j], one.keyTerm[j]);
      }
    }
    result = std::move(joint);
  }
  std::vector<double> maxValueError(envelope.valueSpan.size(), 0.0);
  for (const an::PositionClassEnvelope &cls : classes)
    for (size_t j = 0; j < maxValueError.size(); ++j)
      maxValueError[j] = std::max(maxValueError[j], cls.maxValueError[j]);
  std::vector<double> kernel =
      getKernelAccumulationError(envelope, geometry, options, maxValueError);
  result.infNorm = 0.0;
  for (size_t j = 0; j < result.perComponent.size(); ++j) {
    result.perComponent[j] += kernel[j];
    // std::max would drop a NaN and certify 0: a NaN is a failure.
    if (std::isnan(result.perComponent[j]))
      return Status::failure("the bound of output channel " +
                             std::to_string(j) +
                             " is not a number; the envelope or the "
                             "calibration holds values the model cannot "
                             "bound");
    result.infNorm = std::max(result.infNorm, result.perComponent[j]);
  }
  return Status::success();
}

double certify::maximizeOverEnvelope(const std::vector<double> &masses,
                                     const std::vector<double> &values) {
  double total = 0.0, largest = 0.0;
  for (size_t c = 0; c < masses.size(); ++c) {
    total += masses[c];
    largest = std::max(largest, values[c]);
  }
  if (total < 1.0)
    return largest;
  // Fill the unit of mass greedily, largest values first.
  std::vector<size_t> order(masses.size());
  for (size_t c = 0; c < order.size(); ++c)
    order[c] = c;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return values[a] > values[b]; });
  double remaining = 1.0, result = 0.0;
  for (size_t c : order) {
    double take = std::min(remaining, masses[c]);
    if (take > 0.0) // a class with no mass adds nothing, even an inf
      result += take * values[c];
    remaining -= take;
    if (remaining <= 0.0)
      break;
  }
  return result;
}

Status certify::computeClassBound(
    const std::vector<an::PositionClassEnvelope> &classes,
    const std::vector<double> &valueSpan, an::StaticCertifiedBound &result) {
  result = an::StaticCertifiedBound();
  size_t dims = valueSpan.size();
  std::vector<double> masses, logit;
  for (const an::PositionClassEnvelope &cls : classes) {
    if (cls.maxValueError.size() != dims)
      return Status::failure("value error bounds have " +
                             std::to_string(cls.maxValueError.size()) +
                             " channels, expected " + std::to_string(dims));
    if (!(cls.attentionMass >= 0.0) || !std::isfinite(cls.maxLogitError))
      return Status::failure("class envelope is not finite");
    masses.push_back(std::min(cls.attentionMass, 1.0));
    logit.push_back(cls.maxLogitError);
  }
  double meanLogit = maximizeOverEnvelope(masses, logit);
  result.meanLogitErrorBound = meanLogit;
  double growth = std::exp(meanLogit);
  for (size_t j = 0; j < dims; ++j) {
    std::vector<double> value(classes.size()), key(classes.size()),
        both(classes.size());
    double maxValue = 0.0;
    for (size_t c = 0; c < classes.size(); ++c) {
      double e = classes[c].maxLogitError;
      value[c] = scaleTerm(std::exp(e), classes[c].maxValueError[j]);
      key[c] = scaleTerm(an::phi(e), valueSpan[j]);
      both[c] = value[c] + key[c];
      maxValue = std::max(maxValue, classes[c].maxValueError[j]);
    }
    // The first term also has the alternative sum_t a^_t dV_t <= max dV.
    double valueTerm =
        std::min(scaleTerm(growth, maximizeOverEnvelope(masses, value)),
                 maxValue);
    double keyTerm = scaleTerm(growth, maximizeOverEnvelope(masses, key));
    double joint = scaleTerm(growth, maximizeOverEnvelope(masses, both));
    double component = std::min(joint, valueTerm + keyTerm);
    result.valueTerm.push_back(valueTerm);
    result.keyTerm.push_back(keyTerm);
    result.perComponent.push_back(component);
    result.infNorm = std::max(result.infNorm, component);
  }
  return Status::success();
}

double certify::computeKeyNecessaryBits(const HeadEnvelope &envelope,
                                        double tolerance) {
  double maxSpan = getMaxValueSpan(envelope), keyRange = 0.0;
  for (const an::ValueRange &range : envelope.keys[kBody].channelRanges)
    keyRange = std::max(keyRange, range.max - range.min);
  // kappa_K <= (1/2) ||q||_1^2 / d * max_t R_t (§3), with the (C2) bounds
  // standing in for |q| (so ||Q||_1 >= ||q||_1).
  double kappa = an::computeKeyCurvatureBound(envelope.queryBound, maxSpan);
  return an::computeHnfNecessaryBits(1.0, kappa, keyRange, tolerance);
}

/// The certificate of (layer, head) of `plan` over `envelope`: every class
/// the plan has, its formats (each body block's for a per-block plan, whose
/// ranges `stats` narrows), then finishCertificate. The one implementation
/// behind certifyHead and certifyPlanHead.
static Status certifyWithEnvelope(const CalibrationStats *stats,
                                  const HeadEnvelope &envelope,
                                  const Plan &plan, int64_t layer,
                                  int64_t head, const CertifyOptions &options,
                                  an::StaticCertifiedBound &result,
                                  double &maxKeyLogitError) {
  const Geometry &g = plan.geometry;
  if (plan.perBlock && !stats)
    return Status::failure("a per-block plan needs its calibration");
  std::vector<an::PositionClassEnvelope> classes;
  std::vector<std::vector<KeyLogitModel>> keyModels;
  maxKeyLogitError = 0.0;
  int64_t tokens[kNumSegments] = {g.getSinkTokens(), g.getWindowTokens(),
                                  g.getBodyTokens()};
  for (int segment = 0; segment < kNumSegments; ++segment) {
    if (tokens[segment] == 0)
      continue;
    an::PositionClassEnvelope cls;
    cls.segment = segment;
    cls.attentionMass = envelope.mass[segment];
    cls.maxValueError.assign(g.headDim, 0.0);
    keyModels.emplace_back();
    // The formats a class uses: one, or for a per-block body each block's
    // with that block's calibrated ranges. Only the blocks that are body at
    // full length: the later ones are in the window at every length up to
    // the capacity, so their body formats are never used.
    // A per-block body with a single such block is still per-block: it is
    // narrowed to that block's ranges like any other.
    bool blockwise = segment == kBody && plan.perBlock;
    int64_t parts = blockwise ? ceilDiv(g.getBodyTokens(), g.block) : 1;
    // Per-block bodies narrow a copy of the envelope block by block.
    std::optional<HeadEnvelope> narrowedCopy;
    if (blockwise)
      narrowedCopy = envelope;
    const HeadEnvelope &local = blockwise ? *narrowedCopy : envelope;
    // Blocks whose ranges calibration could not narrow share the class-wide
    // error of their format: evaluate each such format once.
    std::map<std::pair<int, int8_t>, bool> seenWide;
    for (int64_t part = 0; part < parts; ++part) {
      bool narrowed = false;
      if (blockwise) {
        int64_t begin = g.sink + part * g.block;
        int64_t end = std::min(begin + g.block, g.capacity);
        narrowed =
            narrowToBlock(*stats, layer, head, envelope, begin, end,
                          *narrowedCopy);
      }
      for (int kv = 0; kv < 2; ++kv) {
        int64_t item = plan.getItem(layer, head, kv);
        if (blockwise && !narrowed) {
          int8_t index =
              plan.bodyFormats[item * g.getNumBodyBlocks() + part];
          if (!seenWide.emplace(std::make_pair(kv, index), true).second)
            continue;
        }
        const an::StorageFormat &format =
            segment == kSink     ? plan.getSink(item)
            : segment == kWindow ? plan.getWindow(item)
                                 : plan.getBody(item, part);
        SegmentError error;
        Status status =
            segment == kBody
                ? evaluateDemotedBody(local, kv, plan.getWindow(item), format,
                                      g, options, error)
                : evaluateSegment(local, segment, kv, format, options, error);
        if (status.failed())
          return Status::failure(std::string(getSegmentName(segment)) +
                                 (kv == 0 ? " keys: " : " values: ") +
                                 status.getMessage());
        if (kv == 0) {
          cls.maxLogitError = std::max(cls.maxLogitError, error.logitError);
          keyModels.back().push_back(std::move(error.keyModel));
        } else
          for (int64_t j = 0; j < g.headDim; ++j)
            cls.maxValueError[j] = std::max(cls.maxValueError[j],
                                            error.valueErrorPerChannel[j]);
      }
    }
    maxKeyLogitError = std::max(maxKeyLogitError, cls.maxLogitError);
    classes.push_back(std::move(cls));
  }
  return finishCertificate(envelope, g, options, classes, keyModels, result);
}

Status certify::certifyPlanHead(const CalibrationStats &stats, const Plan &plan,
                                int64_t layer, int64_t head,
                                const CertifyOptions &options,
                                an::StaticCertifiedBound &result,
                                double &maxKeyLogitError) {
  if (std::string problem = checkCoverage(stats, plan.geometry, options);
      !problem.empty())
    return Status::failure(problem);
  HeadEnvelope envelope =
      buildHeadEnvelope(stats, plan.geometry, layer, head, options);
  return certifyWithEnvelope(&stats, envelope, plan, layer, head, options,
                             result, maxKeyLogitError);
}

Status certify::certifyHead(const HeadEnvelope &envelope,
                            const HeadFormats &formats, const Geometry &geometry,
                            const CertifyOptions &options,
                            an::StaticCertifiedBound &result) {
  // The formats as a one-head plan.
  Plan plan;
  plan.geometry = geometry;
  plan.geometry.layers = plan.geometry.heads = 1;
  for (int kv = 0; kv < 2; ++kv)
    for (int segment = 0; segment < kNumSegments; ++segment)
      plan.formats.push_back(formats[kv][segment]);
  for (int kv = 0; kv < 2; ++kv) {
    plan.sinkFormats.push_back(int8_t(kv * kNumSegments + kSink));
    plan.windowFormats.push_back(int8_t(kv * kNumSegments + kWindow));
    plan.bodyFormats.push_back(int8_t(kv * kNumSegments + kBody));
  }
  double maxKeyLogitError = 0.0;
  return certifyWithEnvelope(nullptr, envelope, plan, 0, 0, options, result,
                             maxKeyLogitError);
}
