//===- Collector.cpp - Reduce attention steps into statistics -------------===//

#include "kvprec/Calibration/Collector.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

using namespace llvm;

namespace kvprec::calib {

static constexpr float kInf = std::numeric_limits<float>::infinity();

/// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b.
static int64_t ceilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/// The smallest float >= `value`: envelope maxima are stored in f32 and
/// must not drop below what was observed.
static float roundUp(double value) {
  float result = static_cast<float>(value);
  if (static_cast<double>(result) < value)
    result = std::nextafter(result, kInf);
  return result;
}

StatsCollector::StatsCollector(const LlamaConfig &config,
                               const PositionClasses &classes,
                               int64_t querySamples)
    : config(config), classes(classes), layers(config.numLayers),
      kvHeads(config.numKVHeads), groupSize(config.getQueryHeadsPerKVHead()),
      headDim(config.getHeadSize()), querySamples(querySamples) {
  assert(classes.block >= 1 && classes.sink >= 0 && classes.window >= 0 &&
         "invalid position classes");
  int64_t seqLen = config.seqLen;
  bodyBlockCapacity =
      ceilDiv(std::max<int64_t>(seqLen - classes.window, 0), classes.block);
  absBlockCapacity = ceilDiv(seqLen, classes.block);

  size_t lh = layers * kvHeads;
  sinkMax.assign(lh, 0.0f);
  windowMax.assign(lh, 0.0f);
  maxWeight.assign(lh, 0.0f);
  l1Max.assign(lh, 0.0f);
  logitMax.assign(lh, 0.0f);
  sinkSum.assign(lh, 0.0);
  windowSum.assign(lh, 0.0);
  entropySum.assign(lh, 0.0);
  queryCount.assign(lh, 0);
  bodyMax.assign(lh * bodyBlockCapacity, 0.0f);
  qAbsMax.assign(lh * headDim, 0.0f);
  kMin.assign(lh * headDim, kInf);
  kMax.assign(lh * headDim, -kInf);
  vMin.assign(lh * headDim, kInf);
  vMax.assign(lh * headDim, -kInf);
  for (std::vector<float> *blockStat :
       {&kAbsMax, &vAbsMax, &kTokenRange, &vTokenRange, &kChanSpan, &vChanSpan})
    blockStat->assign(lh * absBlockCapacity, 0.0f);
  positionCount.assign(absBlockCapacity, 0);
  sampleMass.assign(lh * querySamples * kSampleSlotBins, 0.0f);
  sampleSqMass.assign(lh * querySamples * kSampleSlotBins, 0.0f);
  sampleAbsQ.assign(lh * querySamples * headDim, 0.0f);
  sampleLogit.assign(lh * querySamples, 0.0f);
  samplesSeen.assign(lh, 0);
  kBlockMin.assign(lh * headDim, kInf);
  kBlockMax.assign(lh * headDim, -kInf);
  vBlockMin.assign(lh * headDim, kInf);
  vBlockMax.assign(lh * headDim, -kInf);
  currentBlock.assign(lh, -1);
  bodyScratch.assign(bodyBlockCapacity, 0.0);
  queryAbsScratch.assign(headDim, 0.0);
  keyAbsCache.assign(static_cast<size_t>(layers) * seqLen * kvHeads * headDim,
                     0.0f);
}

void StatsCollector::flushBlock(size_t lh) {
  int64_t block = currentBlock[lh];
  if (block < 0)
    return;
  float kSpan = 0.0f, vSpan = 0.0f;
  for (int64_t j = 0; j < headDim; ++j) {
    size_t c = lh * headDim + j;
    kSpan = std::max(kSpan, kBlockMax[c] - kBlockMin[c]);
    vSpan = std::max(vSpan, vBlockMax[c] - vBlockMin[c]);
    kBlockMin[c] = vBlockMin[c] = kInf;
    kBlockMax[c] = vBlockMax[c] = -kInf;
  }
  size_t index = lh * absBlockCapacity + block;
  kChanSpan[index] = std::max(kChanSpan[index], kSpan);
  vChanSpan[index] = std::max(vChanSpan[index], vSpan);
  currentBlock[lh] = -1;
}

void StatsCollector::observe(const AttentionStep &step) {
  const int64_t layer = step.layer, p = step.position;
  const int64_t sink = classes.sink, window = classes.window,
                blockSize = classes.block;
  const int64_t absBlock = p / blockSize;
  assert(p < config.seqLen && "position beyond the model's context");
  if (layer == 0)
    ++positionCount[absBlock];
  maxPositions = std::max(maxPositions, p + 1);

  // Cache |K| at p; positions are fed in order from 0, so rows [0, p] of this
  // layer hold the current sequence's keys.
  const size_t kvDim = static_cast<size_t>(kvHeads * headDim);
  const float *keyRows =
      keyAbsCache.data() + static_cast<size_t>(layer) * config.seqLen * kvDim;
  {
    float *row = keyAbsCache.data() +
                 (static_cast<size_t>(layer) * config.seqLen + p) * kvDim;
    for (size_t i = 0; i < kvDim; ++i)
      row[i] = std::fabs(step.key[i]);
  }
  const double logitScale = 1.0 / std::sqrt(static_cast<double>(headDim));

  for (int64_t kvHead = 0; kvHead < kvHeads; ++kvHead) {
    const size_t lh = layer * kvHeads + kvHead;

    // Queries: every query head of the GQA group is one sample.
    for (int64_t g = 0; g < groupSize; ++g) {
      const int64_t head = kvHead * groupSize + g;
      ArrayRef<float> weights = step.getWeights(head);

      double sinkMass = 0.0;
      for (int64_t t = 0; t < std::min(sink, p + 1); ++t)
        sinkMass += weights[t];
      // Window: p - t < W, sink positions excluded.
      double windowMass = 0.0;
      for (int64_t t = std::max(sink, p - window + 1); t <= p; ++t)
        windowMass += weights[t];
      // Body: t >= S and W + j*B <= p - t < W + (j+1)*B.
      int64_t lastBody = p - window;
      if (lastBody >= sink) {
        int64_t lastBlock = (p - sink - window) / blockSize;
        std::fill_n(bodyScratch.begin(), lastBlock + 1, 0.0);
        for (int64_t t = sink; t <= lastBody; ++t)
          bodyScratch[(p - t - window) / blockSize] += weights[t];
        float *bodyRow = bodyMax.data() + lh * bodyBlockCapacity;
        for (int64_t j = 0; j <= lastBlock; ++j)
          bodyRow[j] = std::max(bodyRow[j], roundUp(bodyScratch[j]));
      }
      double entropy = 0.0;
      float largest = 0.0f;
      for (float w : weights) {
        if (w > 0.0f)
          entropy -= static_cast<double>(w) * std::log(static_cast<double>(w));
        largest = std::max(largest, w);
      }
      sinkMax[lh] = std::max(sinkMax[lh], roundUp(sinkMass));
      windowMax[lh] = std::max(windowMax[lh], roundUp(windowMass));
      sinkSum[lh] += sinkMass;
      windowSum[lh] += windowMass;
      entropySum[lh] += entropy;
      maxWeight[lh] = std::max(maxWeight[lh], largest);
      ++queryCount[lh];

      ArrayRef<float> q = step.queries.slice(head * headDim, headDim);
      double l1 = 0.0;
      for (int64_t j = 0; j < headDim; ++j) {
        float magnitude = std::fabs(q[j]);
        l1 += magnitude;
        float &channelMax = qAbsMax[lh * headDim + j];
        channelMax = std::max(channelMax, magnitude);
      }
      l1Max[lh] = std::max(l1Max[lh], roundUp(l1));

      // Logit envelope: max over the cached t <= p of sum_j |q_j| |K_{t,j}|.
      for (int64_t j = 0; j < headDim; ++j)
        queryAbsScratch[j] = std::fabs(q[j]);
      double largestLogit = 0.0;
      for (int64_t t = 0; t <= p; ++t) {
        const float *key = keyRows + t * kvDim + kvHead * headDim;
        double sum = 0.0;
        for (int64_t j = 0; j < headDim; ++j)
          sum += queryAbsScratch[j] * key[j];
        largestLogit = std::max(largestLogit, sum);
      }
      float sampleLogitValue = roundUp(logitScale * largestLogit);
      logitMax[lh] = std::max(logitMax[lh], sampleLogitValue);

      // Reservoir sampling (Algorithm R): the k-th query replaces a kept
      // one with probability N / k.
      if (querySamples > 0) {
        int64_t seen = samplesSeen[lh]++;
        int64_t slot = seen;
        if (seen >= querySamples) {
          sampleRandom ^= sampleRandom << 13;
          sampleRandom ^= sampleRandom >> 7;
          sampleRandom ^= sampleRandom << 17;
          slot = static_cast<int64_t>(sampleRandom % uint64_t(seen + 1));
        }
        if (slot < querySamples) {
          size_t base = lh * querySamples + slot;
          float *mass = sampleMass.data() + base * kSampleSlotBins;
          std::fill_n(mass, kSampleSlotBins, 0.0f);
          mass[0] = roundUp(sinkMass);
          mass[1] = roundUp(windowMass);
          if (lastBody >= sink) {
            int64_t lastBlock = (p - sink - window) / blockSize;
            double rest = 0.0;
            for (int64_t j = 0; j <= lastBlock; ++j)
              if (j < kSampleBodyBins)
                mass[2 + j] = roundUp(bodyScratch[j]);
              else
                rest += bodyScratch[j];
            mass[kSampleSlotBins - 1] = roundUp(rest);
          }
          // The same bins' sums of squared weights (error-bounds.md §9).
          float *squares = sampleSqMass.data() + base * kSampleSlotBins;
          double binSquares[kSampleSlotBins] = {};
          for (int64_t t = 0; t <= p; ++t) {
            double w = weights[t];
            int64_t bin = t < sink         ? 0
                          : p - t < window ? 1
                          : (p - t - window) / blockSize < kSampleBodyBins
                              ? 2 + (p - t - window) / blockSize
                              : kSampleSlotBins - 1;
            binSquares[bin] += w * w;
          }
          for (int64_t b = 0; b < kSampleSlotBins; ++b)
            squares[b] = std::min(roundUp(binSquares[b]), mass[b]);
          for (int64_t j = 0; j < headDim; ++j)
            sampleAbsQ[base * headDim + j] = std::fabs(q[j]);
          sampleLogit[base] = sampleLogitValue;
        }
      }
    }

    // The K/V appended at p: per-channel ranges and block statistics.
    if (p == 0 || currentBlock[lh] != absBlock) {
      flushBlock(lh);
      currentBlock[lh] = absBlock;
    }
    auto reduceVector =
        [&](ArrayRef<float> vec, std::vector<float> &chanMin,
            std::vector<float> &chanMax, std::vector<float> &blockMin,
            std::vector<float> &blockMax, std::vector<float> &absMax,
            std::vector<float> &tokenRange) {
          float lo = kInf, hi = -kInf, largest = 0.0f;
          for (int64_t j = 0; j < headDim; ++j) {
            float x = vec[j];
            size_t c = lh * headDim + j;
            chanMin[c] = std::min(chanMin[c], x);
            chanMax[c] = std::max(chanMax[c], x);
            blockMin[c] = std::min(blockMin[c], x);
            blockMax[c] = std::max(blockMax[c], x);
            lo = std::min(lo, x);
            hi = std::max(hi, x);
            largest = std::max(largest, std::fabs(x));
          }
          size_t index = lh * absBlockCapacity + absBlock;
          absMax[index] = std::max(absMax[index], largest);
          tokenRange[index] = std::max(tokenRange[index], hi - lo);
        };
    reduceVector(step.key.slice(kvHead * headDim, headDim), kMin, kMax,
                 kBlockMin, kBlockMax, kAbsMax, kTokenRange);
    reduceVector(step.value.slice(kvHead * headDim, headDim), vMin, vMax,
                 vBlockMin, vBlockMax, vAbsMax, vTokenRange);
  }
}

Expected<CalibrationStats>
StatsCollector::finish(StringRef modelName, int64_t prompts, int64_t steps) {
  if (maxPositions == 0)
    return createStringError(inconvertibleErrorCode(),
                             "no attention steps were observed");
  for (size_t lh = 0; lh < currentBlock.size(); ++lh)
    flushBlock(lh);

  CalibrationStats stats;
  stats.shape.layers = layers;
  stats.shape.kvHeads = kvHeads;
  stats.shape.qHeads = config.numHeads;
  stats.shape.headDim = headDim;
  stats.shape.sink = classes.sink;
  stats.shape.window = classes.window;
  stats.shape.block = classes.block;
  stats.shape.maxPositions = maxPositions;
  stats.shape.querySamples = querySamples;
  stats.model = modelName.str();
  stats.synthetic = false;
  stats.prompts = prompts;
  stats.steps = steps;
  // The model's attention (Model.cpp) scales by 1/sqrt(head_size).
  stats.softmaxScale = 1.0 / std::sqrt(static_cast<double>(headDim));
  stats.allocate();

  const int64_t numBody = stats.shape.getNumBodyBlocks();
  const int64_t numAbs = stats.shape.getNumAbsoluteBlocks();
  for (size_t lh = 0; lh < sinkMax.size(); ++lh) {
    double count = static_cast<double>(queryCount[lh]);
    stats.attnSinkMass[lh] = sinkMax[lh];
    stats.attnWindowMass[lh] = windowMax[lh];
    stats.attnSinkMassMean[lh] = static_cast<float>(sinkSum[lh] / count);
    stats.attnWindowMassMean[lh] = static_cast<float>(windowSum[lh] / count);
    stats.attnEntropyMean[lh] = static_cast<float>(entropySum[lh] / count);
    stats.attnMaxWeight[lh] = maxWeight[lh];
    stats.qL1Max[lh] = l1Max[lh];
    stats.qkLogitMax[lh] = logitMax[lh];
    stats.queryCount[lh] = queryCount[lh];
    std::copy_n(bodyMax.begin() + lh * bodyBlockCapacity, numBody,
                stats.attnBodyMass.begin() + lh * numBody);
    auto copyBlocks = [&](const std::vector<float> &from,
                          std::vector<float> &to) {
      std::copy_n(from.begin() + lh * absBlockCapacity, numAbs,
                  to.begin() + lh * numAbs);
    };
    copyBlocks(kAbsMax, stats.kBlockAbsMax);
    copyBlocks(vAbsMax, stats.vBlockAbsMax);
    copyBlocks(kTokenRange, stats.kBlockTokenRange);
    copyBlocks(vTokenRange, stats.vBlockTokenRange);
    copyBlocks(kChanSpan, stats.kBlockChanSpan);
    copyBlocks(vChanSpan, stats.vBlockChanSpan);
  }
  stats.qAbsMax = qAbsMax;
  stats.kChanMin = kMin;
  stats.kChanMax = kMax;
  stats.vChanMin = vMin;
  stats.vChanMax = vMax;
  std::copy_n(positionCount.begin(), numAbs, stats.positionCount.begin());
  // Query samples, with the body bins the observed length has.
  const int64_t bins = stats.shape.getNumSampleMassBins();
  for (size_t lh = 0; lh < samplesSeen.size(); ++lh) {
    stats.querySampleCount[lh] = std::min(samplesSeen[lh], querySamples);
    for (int64_t i = 0; i < stats.querySampleCount[lh]; ++i) {
      size_t base = lh * querySamples + i;
      const float *from = sampleMass.data() + base * kSampleSlotBins;
      float *to = stats.querySampleMass.data() + base * bins;
      const float *fromSquares = sampleSqMass.data() + base * kSampleSlotBins;
      float *toSquares = stats.querySampleSqMass.data() + base * bins;
      for (int64_t b = 0; b < bins - 1; ++b) {
        to[b] = from[b];
        toSquares[b] = fromSquares[b];
      }
      to[bins - 1] = from[kSampleSlotBins - 1];
      toSquares[bins - 1] = fromSquares[kSampleSlotBins - 1];
    }
  }
  std::copy(sampleAbsQ.begin(), sampleAbsQ.end(),
            stats.querySampleAbsQ.begin());
  std::copy(sampleLogit.begin(), sampleLogit.end(),
            stats.querySampleLogit.begin());
  return stats;
}

} // namespace kvprec::calib
