//===- PlanCertifier.h - certificates and allocation for plans --*- C++ -*-===//
//
// Connects calibration statistics (kvprec/Calibration) to the error-bound
// mathematics (kvprec/Analysis) for whole caches: the position classes of a
// plan (sink, recent window, body), their calibrated envelopes, the static
// certificate of every (layer, KV head), and the multiple-choice knapsack
// that picks formats. Plain C++: the MLIR passes and kvprec-calib both call
// it, so a plan is certified by one piece of code wherever it is checked.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CERTIFY_PLANCERTIFIER_H
#define KVPREC_CERTIFY_PLANCERTIFIER_H

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Analysis/ErrorModel.h"
#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Format/Plan.h"
#include "kvprec/Format/Status.h"
#include "kvprec/Format/StorageFormat.h"
#include "kvprec/Calibration/CalibrationStats.h"

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace kvprec {
namespace certify {

using analysis::Status;
using analysis::StorageFormat;



/// What a certificate may say about positions past the calibrated length
/// (error-bounds.md §5, C4).
enum class Extrapolation {
  /// Refuse to certify a cache longer than calibration observed.
  None,
  /// Past the calibrated length nothing is known of attention: every class
  /// mass envelope is 1, and every magnitude envelope (|q_j|, the logit
  /// envelope, K/V channel ranges about their midpoints, value spans) is
  /// multiplied by `extrapolationMargin`.
  WorstCase,
};
const char *getExtrapolationName(Extrapolation rule);

/// The arithmetic the generated attention kernel must perform, which the
/// certificate's kernel-rounding terms (error-bounds.md §8) assume: f32
/// arithmetic (u = 2^-24); logits as length-d dot products scaled once;
/// exp with relative error at most expUlps * u; per block of
/// `accumulateBlock` positions a running max, weights, and partial sums of
/// weights and weighted values, rescaled once when the blocks combine;
/// one division at the end.
struct KernelContract {
  /// Include the kernel-rounding terms (off only to test §2 on its own).
  bool enabled = true;
  int64_t expUlps = 4;
  /// Positions per accumulation block; 0 means the plan's block.
  int64_t accumulateBlock = 0;
};

/// Which promise a certificate makes.
enum class CertificateKind {
  /// A proof: the bound holds for every rounding error within the
  /// per-element bounds (error-bounds.md §2, §5, §7, §8).
  Deterministic,
  /// The bound holds with probability at least 1 - P per decode step under
  /// the rounding model (M) of error-bounds.md §9: stored-value errors
  /// independent, mean zero, bounded by the per-element bounds, and
  /// independent of the query. Never smaller than needed to hold where the
  /// deterministic one does: each term is the smaller of the two.
  Probabilistic,
};
const char *getCertificateKindName(CertificateKind kind);

using analysis::ConcentrationLevels;
/// The levels of §9 (analysis::ConcentrationLevels) for one (layer, query
/// head): p1 = p2 = p3 = P / (3 layers qHeads), a union bound over the
/// step's attention heads.
/// The levels for a cache of `capacity` positions and `headDim` channels
/// when `stepFailure` (P) is shared by `attentionHeads` heads per step.
ConcentrationLevels getConcentrationLevels(double stepFailure,
                                           int64_t attentionHeads,
                                           int64_t capacity, int64_t headDim);

struct CertifyOptions {
  /// E_cap of error-bounds.md §4: key formats whose logit error exceeds it
  /// are not used, which bounds e^{Ebar} by e^{E_cap}.
  double logitErrorCap = 0.25;
  analysis::DequantizerConfig dequantizer;
  /// Softmax scale; 0 means 1/sqrt(head_dim). The calibration's masses are
  /// only valid at the scale it ran with (checkCoverage).
  double softmaxScale = 0.0;
  Extrapolation extrapolation = Extrapolation::None;
  double extrapolationMargin = 1.0;
  KernelContract kernel;
  /// Use the calibration's query samples (the joint certificate of
  /// error-bounds.md §7) when it has any and the cache is within its length.
  bool jointEnvelope = true;
  CertificateKind certificate = CertificateKind::Deterministic;
  /// Probabilistic: P, the probability per decode step (one query token,
  /// every layer and query head) that the bound may fail under (M).
  double failureProbability = 1e-9;
};

/// One calibration query (error-bounds.md §7): its attention mass in each
/// of the plan's classes (an upper bound: relative classes that straddle a
/// class boundary count in both), its |q_j| scaled like
/// HeadEnvelope::queryBound, and its own logit envelope.
struct QuerySample {
  std::array<double, kNumSegments> mass = {0.0, 0.0, 0.0};
  /// Upper bounds on sum_t a_t^2 over each class (error-bounds.md §9).
  std::array<double, kNumSegments> squares = {0.0, 0.0, 0.0};
  std::vector<double> absQuery;
  double logitEnvelope = 0.0;
};

/// What calibration says about one (layer, KV head) for a given geometry.
struct HeadEnvelope {
  /// (C1) attention mass bound of each class, over the query heads of the
  /// group and all calibrated queries.
  std::array<double, kNumSegments> mass = {1.0, 1.0, 1.0};
  /// (C2) per-channel bound on |q_j|, scaled by softmaxScale * sqrt(d) so
  /// that (1/sqrt d) sum_j Q_j delta_j is the logit error.
  std::vector<double> queryBound;
  /// Lambda >= scale * sum_j |q_j| |K_{t,j}| for every query and cached key
  /// (calibration's qk_logit_max, scaled like queryBound). A relative-error
  /// key format (delta_j <= slope |K_j| + offset_j) has logit error at most
  /// slope * Lambda + (1/sqrt d) sum_j Q_j offset_j, which is much smaller
  /// than (1/sqrt d) sum_j Q_j delta_j when the largest |q_j| and |K_j| of
  /// different channels never meet in one (query, key) pair.
  double logitEnvelope = std::numeric_limits<double>::infinity();
  /// span_j(V): bounds the residual R_{t,j} (§5).
  std::vector<double> valueSpan;
  /// K and V channel ranges of each class (numTokens = the class's
  /// quantization extent: the sink, the window, one body block).
  std::array<analysis::BlockStatistics, kNumSegments> keys, values;
  /// max_j |V_j| over the class ranges, per channel: bounds |V^_j| - delta
  /// in the kernel's accumulation term.
  std::vector<double> valueMagnitude;
  /// Statistics the envelope rests on, for reports.
  double queryL1Max = 0.0;
  int64_t calibratedPositions = 0;
  /// True when the cache is longer than calibration and the envelope was
  /// extrapolated by CertifyOptions::extrapolation.
  bool extrapolated = false;
  /// max(|K_j|) over the classes' ranges, per channel (for the kernel's
  /// logit rounding of one query).
  std::vector<double> keyReach;
  /// The calibration's query samples; when there are any, the certificate
  /// is the joint one (the worst per-query bound), else coordinate-wise.
  std::vector<QuerySample> samples;
  /// Bound on every attention weight (attn_max_weight; 1 when
  /// extrapolated): the coordinate-wise bound sum_{t in c} a_t^2 <=
  /// maxWeight * mass_c of the probabilistic certificate.
  double maxWeight = 1.0;
  /// The probabilistic certificate's levels (unused when deterministic).
  ConcentrationLevels levels;
};

/// The logit error E of the keys of one class (or one body block) as a
/// function of the query: the channel-wise (1/sqrt d) sum_j |q_j| delta_j,
/// or for relative-error formats slope (Lambda + prior) + (1/sqrt d)
/// sum_j |q_j| offset_j when smaller, where a demoted block adds its
/// window's E; plus the kernel's rounding. Evaluated at the coordinate-wise
/// envelope (Q_j, Lambda) it is the static E; at one query sample, that
/// query's.
struct KeyLogitModel {
  /// Total per-channel error bound (window and body added for a demotion).
  std::vector<double> delta;
  /// The relative form of the stored format (unused when !relative).
  bool relative = false;
  double slope = 0.0;
  std::vector<double> offset;
  /// A body block demoted from a window format: that format's own model.
  bool demoted = false, exact = false;
  std::vector<double> windowDelta;
  bool windowRelative = false;
  double windowSlope = 0.0;
  std::vector<double> windowOffset;
  /// Kernel rounding (error-bounds.md §8) under this contract.
  bool kernel = true;
  int64_t expUlps = 4;
  std::vector<double> keyReach;

  /// E for a query with scaled |q_j| `absQuery` and logit envelope `lambda`.
  double evaluate(const std::vector<double> &absQuery, double lambda) const;
  /// The stored values' part of E (evaluate without the kernel's rounding).
  double evaluateStorage(const std::vector<double> &absQuery,
                         double lambda) const;
  /// The kernel's rounding of a logit whose storage error is `storage`.
  double evaluateKernel(const std::vector<double> &absQuery, double lambda,
                        double storage) const;
  /// sigma = ((1/d) sum_j q_j^2 delta_j^2)^{1/2}: the Hoeffding deviation
  /// of the storage error under (M) (error-bounds.md §9).
  double evaluateDeviation(const std::vector<double> &absQuery) const;
};

/// Checks that `stats` can describe a cache of `geometry` (layers, heads,
/// head_dim, and a sink no longer than the calibration's). Returns a
/// message naming the first mismatch, or "".
std::string checkGeometry(const calib::CalibrationStats &stats,
                          const Geometry &geometry);

/// checkGeometry, and what the certificate's statistics must cover: the
/// cache's capacity within the calibrated length unless an extrapolation
/// rule is given (C4), and the softmax scale the calibration ran with
/// (its attention masses are only valid at that scale). Returns a message
/// naming the first problem, or "".
std::string checkCoverage(const calib::CalibrationStats &stats,
                          const Geometry &geometry,
                          const CertifyOptions &options);

/// Builds the envelope of (layer, head). The plan's window and body masses
/// are sums over the calibration's relative classes that can overlap them
/// (capped at 1). A cache longer than the calibration (only after
/// checkCoverage allowed it) gets the envelope of options.extrapolation.
HeadEnvelope buildHeadEnvelope(const calib::CalibrationStats &stats,
                               const Geometry &geometry, int64_t layer,
                               int64_t head, const CertifyOptions &options);

/// Narrows the body K and V ranges of `local` (a copy of the head's
/// envelope) to what calibration saw in absolute positions [begin, end);
/// where it saw nothing, or the block's bound clips nothing, the class-wide
/// ranges of `envelope` stay. Returns true when the ranges changed. Works in
/// place so per-block loops over millions of blocks do not allocate.
bool narrowToBlock(const calib::CalibrationStats &stats, int64_t layer,
                   int64_t head,
                   const HeadEnvelope &envelope, int64_t begin, int64_t end,
                   HeadEnvelope &local);



/// Error figures of one class in one format.
struct SegmentError {
  /// Keys: the largest logit error E over the class. Values: 0.
  double logitError = 0.0;
  /// Values: max_j delta^V_j. Keys: 0.
  double maxValueError = 0.0;
  /// The §4 item error (key: A phi(E) R; value: A e^{E_cap} delta^V).
  double itemError = 0.0;
  /// Values: delta^V_j per channel (for the per-component certificate).
  std::vector<double> valueErrorPerChannel;
  /// Keys: E as a function of the query (logitError is it at the
  /// envelope).
  KeyLogitModel keyModel;
};
Status evaluateSegment(const HeadEnvelope &envelope, int segment, int kv,
                       const StorageFormat &format,
                       const CertifyOptions &options, SegmentError &result);

/// max sum_c a_c x_c over masses 0 <= a_c <= mass_c with sum_c a_c = 1
/// (every query's attention sums to one): the exact worst case of the
/// class envelopes, which is min over lambda of lambda + sum_c mass_c
/// (x_c - lambda)^+. Returns max_c x_c when the masses cannot sum to 1.
double maximizeOverEnvelope(const std::vector<double> &masses,
                            const std::vector<double> &values);

/// The static certificate (error-bounds.md §2 with the envelopes of §5) of
/// position classes with known masses, key logit errors and value errors:
/// per component j, e^{Ebar} max_a sum_c a_c [e^{E_c} dV_{c,j} + phi(E_c)
/// span_j] with the value part also capped by max_c dV_{c,j}, and Ebar
/// bounded by max_a sum_c a_c E_c.
Status computeClassBound(
    const std::vector<analysis::PositionClassEnvelope> &classes,
    const std::vector<double> &valueSpan,
    analysis::StaticCertifiedBound &result);

/// Errors of a body block that was stored in `windowFormat` while recent and
/// re-quantized to `bodyFormat` when it aged out of the window (the original
/// values are gone by then): the window's dequantized values lie within the
/// body ranges widened by the window's delta, and the two deltas add, except
/// where the body stores every window value exactly (demotesExactly). With
/// `window` 0 blocks are stored in the body format directly.
Status evaluateDemotedBody(const HeadEnvelope &envelope, int kv,
                           const StorageFormat &windowFormat,
                           const StorageFormat &bodyFormat,
                           const Geometry &geometry,
                           const CertifyOptions &options,
                           SegmentError &result);

/// True when `bodyFormat` represents every value that `windowFormat`
/// dequantizes to, so demotion adds no error: an f32 body, or the same
/// unscaled float format (re-rounding an f16 value to f16 is the identity).
bool demotesExactly(const StorageFormat &windowFormat,
                    const StorageFormat &bodyFormat);

/// Formats of one (layer, head): [kv][segment].
using HeadFormats = std::array<std::array<StorageFormat, kNumSegments>, 2>;

/// The accumulation and normalisation error of the kernel per output
/// channel, to add to the §2 bound: relative factor * max |V^_j| with
/// max |V^_j| <= valueMagnitude_j + maxValueError_j.
std::vector<double>
getKernelAccumulationError(const HeadEnvelope &envelope,
                           const Geometry &geometry,
                           const CertifyOptions &options,
                           const std::vector<double> &maxValueError);

/// computeClassBound plus the kernel's accumulation error: the certificate
/// of classes whose key logit errors already include the kernel's rounding.
/// With query samples in `envelope` and the key models of every class
/// (`keyModels[i]`: the models of classes[i]'s parts), the certificate is
/// the joint one instead (error-bounds.md §7): the largest over samples of
/// the §2 bound with that query's masses, |q| and logit envelope.
Status finishCertificate(
    const HeadEnvelope &envelope, const Geometry &geometry,
    const CertifyOptions &options,
    const std::vector<analysis::PositionClassEnvelope> &classes,
    const std::vector<std::vector<KeyLogitModel>> &keyModels,
    analysis::StaticCertifiedBound &result);

/// The static certificate of §5 for one (layer, head) and its formats.
Status certifyHead(const HeadEnvelope &envelope, const HeadFormats &formats,
                   const Geometry &geometry, const CertifyOptions &options,
                   analysis::StaticCertifiedBound &result);

/// The HNF necessary bits of §3 for the keys of one (layer, head) at
/// `tolerance`: a lower bound, never a sufficient condition.
double computeKeyNecessaryBits(const HeadEnvelope &envelope, double tolerance);

/// A request to the allocator.
struct AllocationRequest {
  Geometry geometry;
  /// One tolerance per layer (or a single one for all).
  std::vector<double> tolerances;
  /// Byte budget for the whole cache; > 0 selects budget -> minimum error.
  double budgetBytes = 0.0;
  /// Budget mode: per layer, the weight of its heads' errors in the total
  /// the allocator minimises (empty: 1 for every layer). sqrt(s_l) of the
  /// measured layer sensitivities makes the total the first-order
  /// sqrt(KL) <= sum_l sqrt(s_l) e_l that kl= plans by.
  std::vector<double> layerWeights;
  /// Candidate formats for keys and for values.
  std::vector<StorageFormat> keyCandidates, valueCandidates;
  CertifyOptions options;
};

struct AllocationOutcome {
  /// Per (layer, head): the chosen formats and the certified bound.
  std::vector<HeadFormats> formats;
  std::vector<double> bounds;
  double totalBytes = 0.0;
  /// Sum over heads of the allocator's decoupled error and its LP gap.
  double lowerBoundBytes = 0.0;
  size_t numItems = 0;
};

/// Tolerance -> minimum bytes (each (layer, head) is one multiple-choice
/// knapsack with eps' = eps e^{-E_cap}), or, with a budget, budget ->
/// minimum total error over all heads. Fails with a message naming the
/// layer and head when a tolerance cannot be met or the budget is below
/// the cheapest plan.
Status allocatePlan(const calib::CalibrationStats &stats,
                    const AllocationRequest &request,
                    AllocationOutcome &outcome);

/// Per-block refinement of a uniform body (error-bounds.md §4 items, one per
/// body block and K or V): each block takes the cheapest candidate whose
/// error after demotion from `windowFormat`, measured with that block's own
/// calibrated ranges, is no larger than the uniform body format's with the
/// class-wide ranges. The certificate (which takes the worst body block) is
/// therefore unchanged. `blockFormats` receives, per body block, an index
/// into `candidates`.
Status refineBodyBlocks(const calib::CalibrationStats &stats,
                        const Geometry &geometry, int64_t layer, int64_t head,
                        int kv, const HeadEnvelope &envelope,
                        const StorageFormat &windowFormat,
                        const StorageFormat &bodyFormat,
                        const std::vector<StorageFormat> &candidates,
                        const CertifyOptions &options,
                        std::vector<int> &blockFormats);

} // namespace certify
} // namespace kvprec

#endif // KVPREC_CERTIFY_PLANCERTIFIER_H
