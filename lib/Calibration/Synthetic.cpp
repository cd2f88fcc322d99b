//===- Synthetic.cpp - Synthetic calibration statistics -------------------===//

#include "kvprec/Calibration/Synthetic.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>

using namespace llvm;

namespace kvprec::calib {

namespace {
/// splitmix64: a small, portable generator, so a seed means the same numbers
/// on every platform (std:: distributions are implementation-defined).
class Random {
public:
  explicit Random(uint64_t seed) : state(seed) {}

  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Standard normal (Box-Muller).
  double normal() {
    double u1 = 1.0 - uniform(); // (0, 1]
    double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

private:
  uint64_t state;
};

/// What a head mostly attends to, which sets how fast body mass decays.
enum class HeadKind { Local, Mixed, Retrieval };
} // namespace

/// An independent stream per (layer, head), so values do not depend on the
/// order heads are generated in.
static Random makeHeadRandom(uint64_t seed, int64_t layer, int64_t head) {
  Random mixer(seed ^
               (0xD1B54A32D192ED03ull * static_cast<uint64_t>(layer + 1)) ^
               (0x8CB92BA72F3D8DD7ull * static_cast<uint64_t>(head + 1)));
  return Random(mixer.next());
}

static Error validateOptions(const SyntheticOptions &options) {
  auto fail = [](const Twine &message) {
    return createStringError(inconvertibleErrorCode(),
                             "synthetic statistics: " + message);
  };
  struct {
    StringRef name;
    int64_t value, minimum;
  } checks[] = {
      {"layers", options.layers, 1},     {"kv-heads", options.kvHeads, 1},
      {"q-heads", options.qHeads, 1},    {"head-dim", options.headDim, 2},
      {"capacity", options.capacity, 1}, {"block", options.block, 1},
      {"sink", options.sink, 0},         {"window", options.window, 0}};
  for (const auto &check : checks)
    if (check.value < check.minimum)
      return fail(formatv("--{0} is {1}, must be at least {2}", check.name,
                          check.value, check.minimum)
                      .str());
  if (options.qHeads % options.kvHeads != 0)
    return fail(formatv("--q-heads {0} is not a multiple of --kv-heads {1}",
                        options.qHeads, options.kvHeads)
                    .str());
  if (options.headDim % 2 != 0)
    return fail(formatv("--head-dim {0} is odd; RoPE channels come in pairs",
                        options.headDim)
                    .str());
  return Error::success();
}

Expected<CalibrationStats>
generateSyntheticStats(const SyntheticOptions &options) {
  if (Error e = validateOptions(options))
    return std::move(e);

  CalibrationStats stats;
  CalibrationShape &shape = stats.shape;
  shape.layers = options.layers;
  shape.kvHeads = options.kvHeads;
  shape.qHeads = options.qHeads;
  shape.headDim = options.headDim;
  shape.sink = options.sink;
  shape.window = options.window;
  shape.block = options.block;
  shape.maxPositions = options.capacity;
  if (Error e = validateCalibrationShape(shape, "synthetic statistics"))
    return std::move(e);
  stats.model = "synthetic";
  stats.synthetic = true;
  stats.prompts = 0;
  stats.steps = 0;
  stats.softmaxScale = 1.0 / std::sqrt(static_cast<double>(shape.headDim));
  stats.allocate();

  const int64_t L = shape.layers, H = shape.kvHeads, D = shape.headDim,
                P = shape.maxPositions, S = shape.sink, W = shape.window,
                B = shape.block, G = shape.getQueryHeadsPerKVHead();
  const int64_t NB = shape.getNumBodyBlocks(),
                NA = shape.getNumAbsoluteBlocks();
  // The first layers of trained models attend broadly and have weak sinks;
  // deeper layers dump most of their mass on the first tokens.
  const int64_t earlyLayers = L >= 4 ? 2 : 0;
  const double maxEntropy = 0.95 * std::log(static_cast<double>(P));
  // Outlier key channels sit in the low-frequency half of the RoPE pairs.
  const int64_t numPairs = D / 2, firstOutlierPair = numPairs / 2;
  const int64_t numOutlierPairs = std::min<int64_t>(
      std::max<int64_t>(1, D / 64), numPairs - firstOutlierPair);

  std::vector<double> outlierFactor(D), kRanges(D), qValues(D);
  for (int64_t layer = 0; layer < L; ++layer) {
    const double depth = L > 1 ? static_cast<double>(layer) / (L - 1) : 0.5;
    for (int64_t head = 0; head < H; ++head) {
      Random rng = makeHeadRandom(options.seed, layer, head);
      const size_t lh = stats.index(layer, head);

      double kindDraw = rng.uniform();
      HeadKind kind = kindDraw < 0.15  ? HeadKind::Retrieval
                      : kindDraw < 0.5 ? HeadKind::Local
                                       : HeadKind::Mixed;

      // (C1) masses.
      double sinkMax = 0.0;
      if (S > 0)
        sinkMax = layer < earlyLayers
                      ? 0.05 + 0.2 * rng.uniform()
                      : std::min(0.98, 0.5 + 0.45 * depth +
                                           0.08 * (rng.uniform() - 0.5));
      double sinkMean = sinkMax * (0.45 + 0.35 * rng.uniform());
      double windowMax =
          W > 0 ? std::min(1.0, 0.75 + 0.24 * rng.uniform()) : 0.0;
      double windowMean =
          std::min(windowMax * (0.45 + 0.3 * rng.uniform()), 1.0 - sinkMean);

      double alpha, amplitude, floor;
      switch (kind) {
      case HeadKind::Local:
        alpha = 1.3 + 0.5 * rng.uniform();
        amplitude = 0.03 + 0.05 * rng.uniform();
        floor = 1e-4;
        break;
      case HeadKind::Mixed:
        alpha = 0.8 + 0.4 * rng.uniform();
        amplitude = 0.08 + 0.12 * rng.uniform();
        floor = 1e-4;
        break;
      case HeadKind::Retrieval:
        alpha = 0.3 + 0.3 * rng.uniform();
        amplitude = 0.25 + 0.25 * rng.uniform();
        floor = 0.02 + 0.06 * rng.uniform();
        break;
      }
      amplitude *= 1.0 - sinkMean;
      double largestBody = 0.0;
      for (int64_t j = 0; j < NB; ++j) {
        double mass = amplitude * std::pow(1.0 + j, -alpha) *
                          std::exp(0.15 * rng.normal()) +
                      floor;
        mass = std::min(mass, 1.0);
        stats.attnBodyMass[lh * NB + j] = static_cast<float>(mass);
        largestBody = std::max(largestBody, mass);
      }

      // Every query's masses sum to 1, so their maxima must sum to at
      // least 1 (the validator refuses anything else): lift the body, or the
      // window where there is no body.
      double bodySum = 0.0;
      for (int64_t j = 0; j < NB; ++j)
        bodySum += stats.attnBodyMass[lh * NB + j];
      double deficit = 1.0 - (sinkMax + windowMax + bodySum);
      if (deficit > 0 && NB > 0 && bodySum > 0) {
        double factor = (bodySum + deficit) / bodySum * (1 + 1e-6);
        largestBody = 0.0;
        for (int64_t j = 0; j < NB; ++j) {
          float &mass = stats.attnBodyMass[lh * NB + j];
          mass = static_cast<float>(std::min(1.0, mass * factor));
          largestBody = std::max(largestBody, double(mass));
        }
        deficit = 0.0;
        for (int64_t j = 0; j < NB; ++j)
          deficit -= stats.attnBodyMass[lh * NB + j];
        deficit += 1.0 - sinkMax - windowMax;
      }
      if (deficit > 0 && W > 0)
        windowMax = std::min(1.0, windowMax + deficit);
      else if (deficit > 0 && S > 0)
        sinkMax = std::min(1.0, sinkMax + deficit);

      double entropyScale = kind == HeadKind::Local       ? 0.6
                            : kind == HeadKind::Retrieval ? 1.2
                                                          : 0.9;
      double entropy = (1.0 + 3.0 * (1.0 - depth)) * entropyScale *
                       (0.8 + 0.4 * rng.uniform());
      entropy = std::clamp(entropy, 0.0, maxEntropy);

      // A mass m over n positions puts at least m / n on one of them.
      double weightLowerBound = 0.0;
      if (S > 0)
        weightLowerBound = sinkMax / std::min(S, P);
      if (W > 0)
        weightLowerBound =
            std::max(weightLowerBound, windowMax / std::min(W, P));
      weightLowerBound =
          std::max({weightLowerBound, largestBody / std::min(B, P), 1.0 / P});
      double maxWeight =
          std::max({weightLowerBound, sinkMax * (0.7 + 0.25 * rng.uniform()),
                    windowMax * (0.3 + 0.3 * rng.uniform())});

      stats.attnSinkMass[lh] = static_cast<float>(sinkMax);
      stats.attnSinkMassMean[lh] = static_cast<float>(sinkMean);
      stats.attnWindowMass[lh] = static_cast<float>(windowMax);
      stats.attnWindowMassMean[lh] = static_cast<float>(windowMean);
      stats.attnEntropyMean[lh] = static_cast<float>(entropy);
      stats.attnMaxWeight[lh] = static_cast<float>(std::min(maxWeight, 1.0));

      // Outlier key channel pairs and their range factors.
      std::fill(outlierFactor.begin(), outlierFactor.end(), 1.0);
      for (int64_t chosen = 0; chosen < numOutlierPairs;) {
        int64_t pair =
            firstOutlierPair +
            static_cast<int64_t>(rng.uniform() * (numPairs - firstOutlierPair));
        if (outlierFactor[2 * pair] != 1.0)
          continue;
        double factor = 10.0 + 20.0 * rng.uniform();
        outlierFactor[2 * pair] = outlierFactor[2 * pair + 1] = factor;
        ++chosen;
      }

      // (C2) queries and K/V channel ranges; deeper layers have larger K.
      // Draw ordinary channels first; outlier channels are then sized
      // relative to the head's median range and |q|, so "10-30x" means 10-30x
      // the typical channel of that head.
      const double layerScale = 1.0 + 0.75 * depth;
      for (int64_t j = 0; j < D; ++j) {
        size_t c = lh * D + j;
        double halfWidth = (0.4 + 0.6 * rng.uniform()) * layerScale;
        double center = 0.25 * halfWidth * rng.normal();
        stats.kChanMin[c] = static_cast<float>(
            center - halfWidth * (0.85 + 0.3 * rng.uniform()));
        stats.kChanMax[c] = static_cast<float>(
            center + halfWidth * (0.85 + 0.3 * rng.uniform()));
        stats.qAbsMax[c] = static_cast<float>((0.4 + 1.2 * rng.uniform()) *
                                              std::sqrt(layerScale));

        double vHalfWidth = (0.3 + 0.7 * rng.uniform()) * (1.0 + 0.5 * depth);
        double vCenter = 0.1 * vHalfWidth * rng.normal();
        stats.vChanMin[c] = static_cast<float>(
            vCenter - vHalfWidth * (0.85 + 0.3 * rng.uniform()));
        stats.vChanMax[c] = static_cast<float>(
            vCenter + vHalfWidth * (0.85 + 0.3 * rng.uniform()));
      }
      for (int64_t j = 0; j < D; ++j) {
        size_t c = lh * D + j;
        kRanges[j] = stats.kChanMax[c] - stats.kChanMin[c];
        qValues[j] = stats.qAbsMax[c];
      }
      std::nth_element(kRanges.begin(), kRanges.begin() + D / 2, kRanges.end());
      std::nth_element(qValues.begin(), qValues.begin() + D / 2, qValues.end());
      const double medianRange = kRanges[D / 2], medianQ = qValues[D / 2];
      for (int64_t j = 0; j < D; ++j) {
        if (outlierFactor[j] == 1.0)
          continue;
        size_t c = lh * D + j;
        double range = outlierFactor[j] * medianRange;
        // Outlier channels are offset from zero, as measured ones are.
        double center = (rng.uniform() < 0.5 ? -0.2 : 0.2) * range;
        stats.kChanMin[c] = static_cast<float>(center - 0.5 * range);
        stats.kChanMax[c] = static_cast<float>(center + 0.5 * range);
        // Queries match the key outliers.
        stats.qAbsMax[c] =
            static_cast<float>(medianQ * (3.0 + 5.0 * rng.uniform()));
      }

      double qSum = 0.0, qLargest = 0.0, kBound = 0.0, kWidest = 0.0,
             vBound = 0.0, vWidest = 0.0;
      for (int64_t j = 0; j < D; ++j) {
        size_t c = lh * D + j;
        double kLo = stats.kChanMin[c], kHi = stats.kChanMax[c];
        double vLo = stats.vChanMin[c], vHi = stats.vChanMax[c];
        kBound = std::max({kBound, std::fabs(kLo), std::fabs(kHi)});
        kWidest = std::max(kWidest, kHi - kLo);
        vBound = std::max({vBound, std::fabs(vLo), std::fabs(vHi)});
        vWidest = std::max(vWidest, vHi - vLo);
        qSum += stats.qAbsMax[c];
        qLargest = std::max<double>(qLargest, stats.qAbsMax[c]);
      }
      stats.qL1Max[lh] = static_cast<float>(
          std::max(qLargest, (0.45 + 0.3 * rng.uniform()) * qSum));

      // Per-block statistics stay inside the channel ranges. Outlier channels
      // persist across tokens, so every block's absmax is near the bound;
      // the sink block holds the most extreme keys.
      auto fillBlocks = [&](double bound, double widest,
                            std::vector<float> &absMax,
                            std::vector<float> &tokenRange,
                            std::vector<float> &chanSpan) {
        // Keep float rounding from pushing a block above its channel bound.
        bound *= 1.0 - 1e-6;
        for (int64_t a = 0; a < NA; ++a) {
          double m = bound * (a == 0 ? 0.9 + 0.1 * rng.uniform()
                                     : 0.7 + 0.3 * rng.uniform());
          size_t index = lh * NA + a;
          absMax[index] = static_cast<float>(m);
          tokenRange[index] =
              static_cast<float>(std::min(2.0, 1.2 + 0.6 * rng.uniform()) * m);
          chanSpan[index] = static_cast<float>(std::min(2.0 * m, widest) *
                                               (0.5 + 0.4 * rng.uniform()));
        }
      };
      fillBlocks(kBound, kWidest, stats.kBlockAbsMax, stats.kBlockTokenRange,
                 stats.kBlockChanSpan);
      fillBlocks(vBound, vWidest, stats.vBlockAbsMax, stats.vBlockTokenRange,
                 stats.vBlockChanSpan);

      // The logit envelope: a fraction of its bound
      // (1/sqrt D) * sum_j Q_j * max|K_j|, because the largest |q_j| and |K_j|
      // of different channels rarely meet in one (query, key) pair. Drawn
      // last, so it leaves every other value of the head's stream unchanged.
      double logitBound = getChannelwiseLogitBound(stats, lh);
      stats.qkLogitMax[lh] =
          static_cast<float>(logitBound * (0.2 + 0.3 * rng.uniform()));

      stats.queryCount[lh] = G * P;
    }
  }
  for (int64_t a = 0; a < NA; ++a)
    stats.positionCount[a] = std::min(B, P - a * B);

  if (Error e = validateCalibrationStats(stats, "synthetic statistics"))
    return std::move(e);
  return stats;
}

} // namespace kvprec::calib
