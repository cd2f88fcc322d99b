//===- Allocation.cpp - choosing formats for a plan -------------------------===//
//
// The multiple-choice knapsack of error-bounds.md §4 per (layer, KV head),
// the descent on the joint certificate, and per-block refinement.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/PlanCertifier.h"

#include "CertifyInternal.h"

#include "kvprec/Analysis/Allocator.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
using namespace kvprec::certify::detail;
namespace an = kvprec::analysis;
using calib::CalibrationStats;

namespace {
/// One allocator item: the sink of one (layer, head, kv), or its window and
/// body together (a body block's error depends on the window format it was
/// demoted from), with its usable options.
struct ItemOptions {
  int64_t head; // Flat (layer, head) index.
  int kv;
  /// The classes the item covers (one, or window and body).
  std::vector<int> segments;
  /// Per option, the candidate index of each covered class.
  std::vector<std::vector<int>> choices;
  /// Per covered class its mass envelope; per option its bytes and, per
  /// class, its error per unit of mass (the item error sums mass * it).
  std::vector<double> masses;
  std::vector<double> costs;
  std::vector<std::vector<double>> perMass;
};
} // namespace

/// Builds the items of one (layer, head).
static Status addHeadItems(const HeadEnvelope &envelope,
                           const AllocationRequest &request, int64_t flatHead,
                           std::vector<ItemOptions> &items) {
  const Geometry &geometry = request.geometry;
  int64_t tokens[kNumSegments] = {geometry.getSinkTokens(),
                                  geometry.getWindowTokens(),
                                  geometry.getBodyTokens()};
  // Channel groups run over the tokens of one quantization extent: the
  // sink, or one block (of the window or the body).
  int64_t extent[kNumSegments] = {tokens[kSink], geometry.block,
                                  geometry.block};
  const double cap = request.options.logitErrorCap;
  auto perMassOf = [&](int segment, const SegmentError &error) {
    return envelope.mass[segment] > 0 ? error.itemError / envelope.mass[segment]
                                      : 0.0;
  };
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<StorageFormat> &candidates =
        kv == 0 ? request.keyCandidates : request.valueCandidates;
    const char *what = kv == 0 ? " keys within the logit error cap" : " values";
    // Candidates usable for a class on their own, with their errors.
    auto usable = [&](int segment, std::vector<int> &indices,
                      std::vector<SegmentError> &errors) {
      for (size_t c = 0; c < candidates.size(); ++c) {
        if (!fitsSegment(candidates[c], extent[segment], geometry.headDim))
          continue;
        SegmentError error;
        if (evaluateSegment(envelope, segment, kv, candidates[c],
                            request.options, error)
                .failed())
          continue;
        // Keys whose logit error exceeds the cap are pruned (§4).
        if (kv == 0 && error.logitError > cap)
          continue;
        indices.push_back(static_cast<int>(c));
        errors.push_back(std::move(error));
      }
    };
    if (tokens[kSink] > 0) {
      ItemOptions item{flatHead, kv, {kSink}, {}, {envelope.mass[kSink]}, {},
                       {}};
      std::vector<int> indices;
      std::vector<SegmentError> errors;
      usable(kSink, indices, errors);
      for (size_t i = 0; i < indices.size(); ++i) {
        item.choices.push_back({indices[i]});
        item.costs.push_back(getSegmentBytes(candidates[indices[i]],
                                             tokens[kSink], geometry.headDim));
        item.perMass.push_back({perMassOf(kSink, errors[i])});
      }
      if (item.choices.empty())
        return Status::failure(std::string("no allowed format can store the "
                                           "sink") +
                               what);
      items.push_back(std::move(item));
    }
    if (tokens[kWindow] == 0 && tokens[kBody] == 0)
      continue;
    ItemOptions item{flatHead, kv, {}, {}, {}, {}, {}};
    std::vector<int> windows, bodies;
    std::vector<SegmentError> windowErrors, bodyErrors;
    if (tokens[kWindow] > 0)
      usable(kWindow, windows, windowErrors);
    if (tokens[kBody] > 0)
      usable(kBody, bodies, bodyErrors);
    if (tokens[kWindow] > 0 && windows.empty())
      return Status::failure(
          std::string("no allowed format can store the window") + what);
    if (tokens[kBody] > 0 && bodies.empty())
      return Status::failure(
          std::string("no allowed format can store the body") + what);
    if (tokens[kBody] == 0 || tokens[kWindow] == 0) {
      int segment = tokens[kBody] == 0 ? kWindow : kBody;
      std::vector<int> &indices = segment == kWindow ? windows : bodies;
      std::vector<SegmentError> &errors =
          segment == kWindow ? windowErrors : bodyErrors;
      item.segments = {segment};
      item.masses = {envelope.mass[segment]};
      for (size_t i = 0; i < indices.size(); ++i) {
        item.choices.push_back({indices[i]});
        item.costs.push_back(getSegmentBytes(
            candidates[indices[i]], tokens[segment], geometry.headDim));
        item.perMass.push_back({perMassOf(segment, errors[i])});
      }
      items.push_back(std::move(item));
      continue;
    }
    // Window and body together: every pair, the body error after demotion.
    item.segments = {kWindow, kBody};
    item.masses = {envelope.mass[kWindow], envelope.mass[kBody]};
    for (size_t w = 0; w < windows.size(); ++w)
      for (int b : bodies) {
        SegmentError demoted;
        if (evaluateDemotedBody(envelope, kv, candidates[windows[w]],
                                candidates[b], geometry, request.options,
                                demoted)
                .failed())
          continue;
        if (kv == 0 && demoted.logitError > cap)
          continue;
        item.choices.push_back({windows[w], b});
        item.costs.push_back(
            getSegmentBytes(candidates[windows[w]], tokens[kWindow],
                            geometry.headDim) +
            getSegmentBytes(candidates[b], tokens[kBody], geometry.headDim));
        item.perMass.push_back(
            {perMassOf(kWindow, windowErrors[w]), perMassOf(kBody, demoted)});
      }
    if (item.choices.empty())
      return Status::failure(
          std::string("no allowed pair of formats can store the window and "
                      "body") +
          what);
    items.push_back(std::move(item));
  }
  return Status::success();
}

/// The knapsack of `items` for a "free" error level lambda: since every
/// query's class masses sum to one, sum_c a_c x_c <= lambda + sum_c A_c
/// (x_c - lambda)^+ (LP duality), and splitting lambda evenly between K and
/// V keeps the items separable. lambda = 0 is the plain §4 sum.
/// Each item's option errors go into `problem`; with `layerWeights` (of
/// layers of `headsPerLayer` heads) multiplied by its layer's weight.
static Status buildProblem(const std::vector<ItemOptions> &items,
                           double lambda, an::AllocationProblem &problem,
                           const std::vector<double> &layerWeights = {},
                           int64_t headsPerLayer = 1) {
  for (const ItemOptions &item : items) {
    std::vector<double> errors;
    double weight = layerWeights.empty()
                        ? 1.0
                        : layerWeights[item.head / headsPerLayer];
    for (const std::vector<double> &perMass : item.perMass) {
      double error = 0.0;
      for (size_t s = 0; s < perMass.size(); ++s)
        error += item.masses[s] * std::max(perMass[s] - lambda / 2, 0.0);
      errors.push_back(weight * error);
    }
    if (Status status = problem.addItem(item.costs, errors); status.failed())
      return status;
  }
  return Status::success();
}

/// Lowers the bytes of one head's formats while its certificate stays within
/// `tolerance`: the knapsack works on decoupled, coordinate-wise item
/// errors, which the certificate (joint: the worst sampled query) never
/// exceeds, so its plan is feasible but may be larger than needed. Each
/// step applies the single (K/V, class) format change that saves the most
/// bytes and keeps the certificate within the tolerance, until none does.
/// The bytes of one head's K and V in `formats`.
static double getHeadBytes(const HeadFormats &formats,
                           const Geometry &geometry) {
  double bytes = 0.0;
  for (int kv = 0; kv < 2; ++kv)
    bytes += getSegmentBytes(formats[kv][kSink], geometry.getSinkTokens(),
                             geometry.headDim) +
             getSegmentBytes(formats[kv][kWindow], geometry.getWindowTokens(),
                             geometry.headDim) +
             getSegmentBytes(formats[kv][kBody], geometry.getBodyTokens(),
                             geometry.headDim);
  return bytes;
}

/// Every class in the widest unscaled candidate (f32 when allowed); false
/// when K or V has none.
static bool getMostPreciseFormats(const AllocationRequest &request,
                                  HeadFormats &formats) {
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<StorageFormat> &candidates =
        kv == 0 ? request.keyCandidates : request.valueCandidates;
    const StorageFormat *widest = nullptr;
    for (const StorageFormat &c : candidates)
      if (!an::isScaled(c) &&
          (!widest || an::getBitWidth(c.kind) > an::getBitWidth(widest->kind)))
        widest = &c;
    if (!widest)
      return false;
    formats[kv].fill(*widest);
  }
  return true;
}

static Status descendOnJointCertificate(const HeadEnvelope &envelope,
                                        const AllocationRequest &request,
                                        double tolerance,
                                        HeadFormats &formats) {
  const Geometry &geometry = request.geometry;
  int64_t tokens[kNumSegments] = {geometry.getSinkTokens(),
                                  geometry.getWindowTokens(),
                                  geometry.getBodyTokens()};
  int64_t extent[kNumSegments] = {tokens[kSink], geometry.block,
                                  geometry.block};
  for (;;) {
    double bestSaving = 0.0;
    HeadFormats best = formats;
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<StorageFormat> &candidates =
          kv == 0 ? request.keyCandidates : request.valueCandidates;
      for (int segment = 0; segment < kNumSegments; ++segment) {
        if (tokens[segment] == 0)
          continue;
        double current = getSegmentBytes(formats[kv][segment], tokens[segment],
                                         geometry.headDim);
        for (const StorageFormat &candidate : candidates) {
          double saving = current - getSegmentBytes(candidate, tokens[segment],
                                                    geometry.headDim);
          if (saving <= bestSaving ||
              !fitsSegment(candidate, extent[segment], geometry.headDim))
            continue;
          HeadFormats trial = formats;
          trial[kv][segment] = candidate;
          an::StaticCertifiedBound bound;
          if (certifyHead(envelope, trial, geometry, request.options, bound)
                  .failed() ||
              !(bound.infNorm <= tolerance))
            continue;
          bestSaving = saving;
          best = trial;
        }
      }
    }
    if (bestSaving <= 0.0)
      return Status::success();
    formats = best;
  }
}

Status certify::allocatePlan(const CalibrationStats &stats,
                             const AllocationRequest &request,
                             AllocationOutcome &outcome) {
  const Geometry &geometry = request.geometry;
  if (std::string problem = checkCoverage(stats, geometry, request.options);
      !problem.empty())
    return Status::failure(problem);
  if (request.tolerances.size() != 1 &&
      request.tolerances.size() != size_t(geometry.layers))
    return Status::failure("expected 1 or " + std::to_string(geometry.layers) +
                           " tolerances, got " +
                           std::to_string(request.tolerances.size()));
  int64_t heads = geometry.layers * geometry.heads;
  outcome = AllocationOutcome();
  outcome.formats.resize(heads);
  outcome.bounds.assign(heads, 0.0);

  std::vector<HeadEnvelope> envelopes;
  envelopes.reserve(heads);
  for (int64_t l = 0; l < geometry.layers; ++l)
    for (int64_t h = 0; h < geometry.heads; ++h)
      envelopes.push_back(
          buildHeadEnvelope(stats, geometry, l, h, request.options));

  auto describeHead = [&](int64_t flat) {
    return "layer " + std::to_string(flat / geometry.heads) + ", KV head " +
           std::to_string(flat % geometry.heads);
  };
  auto apply = [&](const std::vector<ItemOptions> &items,
                   const an::AllocationResult &result, size_t firstItem) {
    for (size_t i = 0; i < items.size(); ++i) {
      const ItemOptions &item = items[i];
      const std::vector<StorageFormat> &candidates =
          item.kv == 0 ? request.keyCandidates : request.valueCandidates;
      const std::vector<int> &choice = item.choices[result.choice[firstItem + i]];
      for (size_t s = 0; s < item.segments.size(); ++s)
        outcome.formats[item.head][item.kv][item.segments[s]] =
            candidates[choice[s]];
    }
  };
  // Segments a geometry does not have still need a format in the plan; give
  // them the first candidate.
  for (HeadFormats &formats : outcome.formats)
    for (int kv = 0; kv < 2; ++kv)
      for (int s = 0; s < kNumSegments; ++s)
        formats[kv][s] = kv == 0 ? request.keyCandidates.front()
                                 : request.valueCandidates.front();

  if (request.budgetBytes > 0) {
    an::AllocationProblem problem;
    std::vector<ItemOptions> items;
    for (int64_t flat = 0; flat < heads; ++flat)
      if (Status status = addHeadItems(envelopes[flat], request, flat, items);
          status.failed())
        return Status::failure(describeHead(flat) + ": " +
                               status.getMessage());
    if (!request.layerWeights.empty() &&
        request.layerWeights.size() != size_t(geometry.layers))
      return Status::failure("the budget's layer weights number " +
                             std::to_string(request.layerWeights.size()) +
                             " for " + std::to_string(geometry.layers) +
                             " layers");
    for (double w : request.layerWeights)
      if (!(w > 0) || !std::isfinite(w))
        return Status::failure("a budget layer weight is not a positive "
                               "finite number: " +
                               formatNumber(w));
    if (Status status = buildProblem(items, 0.0, problem, request.layerWeights,
                                     geometry.heads);
        status.failed())
      return status;
    an::AllocationResult result =
        an::minimizeErrorForCost(problem, request.budgetBytes);
    if (!result.ok())
      return Status::failure(result.message);
    apply(items, result, 0);
    outcome.numItems = items.size();
    outcome.lowerBoundBytes = result.totalCost;
  } else {
    for (int64_t flat = 0; flat < heads; ++flat) {
      std::vector<ItemOptions> items;
      if (Status status = addHeadItems(envelopes[flat], request, flat, items);
          status.failed())
        return Status::failure(describeHead(flat) + ": " +
                               status.getMessage());
      double tolerance = request.tolerances.size() == 1
                             ? request.tolerances[0]
                             : request.tolerances[flat / geometry.heads];
      // The kernel's accumulation error is added to every plan's bound;
      // reserve it with the largest value error any candidate can have
      // (|V^| <= 2 max |V|).
      std::vector<double> reserveDelta = envelopes[flat].valueMagnitude;
      double reserve = 0.0;
      for (double r : getKernelAccumulationError(
               envelopes[flat], geometry, request.options, reserveDelta))
        reserve = std::max(reserve, r);
      if (!(tolerance > reserve))
        return Status::failure(
            describeHead(flat) + ": tolerance " + formatNumber(tolerance) +
            " is below the kernel's own rounding error " +
            formatNumber(reserve));
      double decoupled = an::computeDecoupledTolerance(
          tolerance - reserve, request.options.logitErrorCap);
      // Try a few free error levels and keep the cheapest feasible plan.
      an::AllocationResult best;
      std::string lastMessage;
      for (double theta : {0.0, 0.25, 0.5, 0.75, 0.9, 0.97}) {
        an::AllocationProblem problem;
        if (Status status = buildProblem(items, theta * decoupled, problem);
            status.failed())
          return status;
        // One head's problem is small: solve it exactly, and fall back to
        // the greedy (within one upgrade of the optimum) if it is not.
        an::AllocationResult result =
            an::minimizeCostForErrorExact(problem, (1 - theta) * decoupled);
        if (result.status == an::AllocationStatus::InvalidInput)
          result = an::minimizeCostForError(problem, (1 - theta) * decoupled);
        if (!result.ok()) {
          lastMessage = result.message;
          continue;
        }
        if (!best.ok() || result.totalCost < best.totalCost)
          best = std::move(result);
      }
      if (!best.ok()) {
        // Say how close the most precise allowed formats come: the bound
        // they certify (which can exceed the tolerance through the kernel's
        // own rounding alone).
        std::string closest;
        HeadFormats precise;
        bool found = getMostPreciseFormats(request, precise);
        an::StaticCertifiedBound bound;
        bool certified = found && certifyHead(envelopes[flat], precise,
                                              geometry, request.options, bound)
                                      .ok();
        // The knapsack's decoupled item errors (summed over classes, with
        // e^{E_cap}) can exceed a tolerance the certificate itself meets:
        // then start from the most precise formats and descend on the
        // certificate.
        if (certified && bound.infNorm <= tolerance) {
          outcome.formats[flat] = precise;
          if (Status status = descendOnJointCertificate(
                  envelopes[flat], request, tolerance, outcome.formats[flat]);
              status.failed())
            return status;
          continue;
        }
        if (certified)
          closest = "; the most precise allowed formats (" +
                    std::string(an::getStorageKindName(precise[0][0].kind)) +
                    " keys, " + an::getStorageKindName(precise[1][0].kind) +
                    " values) certify " + formatNumber(bound.infNorm);
        return Status::failure(describeHead(flat) + ": tolerance " +
                               formatNumber(tolerance) +
                               " cannot be met by the allowed formats (" +
                               lastMessage + ")" + closest);
      }
      apply(items, best, 0);
      outcome.numItems += items.size();
      outcome.lowerBoundBytes += best.lowerBound;
      bool probabilistic =
          request.options.certificate == CertificateKind::Probabilistic;
      if (!envelopes[flat].samples.empty() || probabilistic)
        if (Status status = descendOnJointCertificate(
                envelopes[flat], request, tolerance, outcome.formats[flat]);
            status.failed())
          return status;
      // The knapsack's items are the deterministic ones, far from the
      // probabilistic certificate: descend from the most precise formats
      // too and keep the smaller plan.
      HeadFormats fromTop;
      if (probabilistic && getMostPreciseFormats(request, fromTop)) {
        an::StaticCertifiedBound bound;
        if (certifyHead(envelopes[flat], fromTop, geometry, request.options,
                        bound)
                .ok() &&
            bound.infNorm <= tolerance) {
          if (Status status = descendOnJointCertificate(
                  envelopes[flat], request, tolerance, fromTop);
              status.failed())
            return status;
          if (getHeadBytes(fromTop, geometry) <
              getHeadBytes(outcome.formats[flat], geometry))
            outcome.formats[flat] = fromTop;
        }
      }
    }
  }

  for (int64_t flat = 0; flat < heads; ++flat) {
    an::StaticCertifiedBound bound;
    if (Status status = certifyHead(envelopes[flat], outcome.formats[flat],
                                    geometry, request.options, bound);
        status.failed())
      return Status::failure(describeHead(flat) + ": " + status.getMessage());
    outcome.bounds[flat] = bound.infNorm;
    outcome.totalBytes += getHeadBytes(outcome.formats[flat], geometry);
  }
  return Status::success();
}

Status certify::refineBodyBlocks(const CalibrationStats &stats,
                                 const Geometry &geometry, int64_t layer,
                                 int64_t head, int kv,
                                 const HeadEnvelope &envelope,
                                 const StorageFormat &windowFormat,
                                 const StorageFormat &bodyFormat,
                                 const std::vector<StorageFormat> &candidates,
                                 const CertifyOptions &options,
                                 std::vector<int> &blockFormats) {
  SegmentError reference;
  if (Status status = evaluateDemotedBody(envelope, kv, windowFormat,
                                          bodyFormat, geometry, options,
                                          reference);
      status.failed())
    return status;
  // Candidates in increasing cost order (per element, with overhead).
  std::vector<int> order(candidates.size());
  for (size_t c = 0; c < candidates.size(); ++c)
    order[c] = static_cast<int>(c);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return getSegmentBytes(candidates[a], geometry.block, geometry.headDim) <
           getSegmentBytes(candidates[b], geometry.block, geometry.headDim);
  });
  int fallback = -1;
  for (size_t c = 0; c < candidates.size(); ++c)
    if (candidates[c] == bodyFormat)
      fallback = static_cast<int>(c);
  if (fallback < 0)
    return Status::failure("the body format is not among the candidates");

  // A block's ranges are the class-wide ranges clipped to its calibrated
  // absmax, and every format's error grows with the ranges. So for each
  // cheaper candidate a binary search over the blocks' sorted bounds finds
  // the largest bound at which it is still dominated, and each block takes
  // the cheapest candidate whose threshold covers its bound: a few dozen
  // evaluations per (layer, head) instead of one per block and candidate.
  // (The plan is certified again afterwards, block by block.)
  int64_t blocks = geometry.getNumBodyBlocks();
  blockFormats.assign(blocks, fallback);
  size_t lh = stats.index(layer, head);
  const std::vector<float> &absMax =
      kv == 0 ? stats.kBlockAbsMax : stats.vBlockAbsMax;
  std::vector<double> bounds(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t begin = geometry.sink + b * geometry.block;
    int64_t end = std::min(begin + geometry.block, geometry.capacity);
    bounds[b] = blockAbsMax(stats, absMax, lh, begin, end);
  }
  std::vector<double> sorted(bounds);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  while (!sorted.empty() && std::isinf(sorted.back()))
    sorted.pop_back();

  HeadEnvelope local = envelope;
  const an::BlockStatistics &wide =
      kv == 0 ? envelope.keys[kBody] : envelope.values[kBody];
  an::BlockStatistics &narrow = kv == 0 ? local.keys[kBody] : local.values[kBody];
  auto dominatedAt = [&](int c, double bound) {
    clipInPlace(wide, bound, narrow);
    SegmentError error;
    if (evaluateDemotedBody(local, kv, windowFormat, candidates[c], geometry,
                            options, error)
            .failed())
      return false;
    // Dominated per channel (values) or in logit error (keys: at the
    // envelope and for every query sample of the joint certificate), so
    // every term of the certificate is no larger than with the body format.
    if (kv == 0) {
      if (!(error.logitError <= reference.logitError))
        return false;
      for (const QuerySample &q : envelope.samples)
        if (!(error.keyModel.evaluate(q.absQuery, q.logitEnvelope) <=
              reference.keyModel.evaluate(q.absQuery, q.logitEnvelope)))
          return false;
      return true;
    }
    for (size_t j = 0; j < error.valueErrorPerChannel.size(); ++j)
      if (error.valueErrorPerChannel[j] > reference.valueErrorPerChannel[j])
        return false;
    return true;
  };
  // thresholds[c]: number of sorted bounds at which candidate c works.
  std::vector<size_t> thresholds(candidates.size(), 0);
  double fallbackCost =
      getSegmentBytes(bodyFormat, geometry.block, geometry.headDim);
  for (int c : order) {
    if (c == fallback ||
        getSegmentBytes(candidates[c], geometry.block, geometry.headDim) >=
            fallbackCost ||
        !fitsSegment(candidates[c], geometry.block, geometry.headDim))
      continue;
    size_t lo = 0, hi = sorted.size(); // Works for sorted[0 .. lo).
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (dominatedAt(c, sorted[mid]))
        lo = mid + 1;
      else
        hi = mid;
    }
    thresholds[c] = lo;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    if (std::isinf(bounds[b]))
      continue; // Never observed: keep the class-wide format.
    size_t rank = std::lower_bound(sorted.begin(), sorted.end(), bounds[b]) -
                  sorted.begin();
    for (int c : order) {
      if (c == fallback)
        break;
      if (rank < thresholds[c]) {
        blockFormats[b] = c;
        break;
      }
    }
  }
  return Status::success();
}
