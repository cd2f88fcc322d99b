//===- CollectorTest.cpp - Statistics collection on a forward pass --------===//

#include "kvprec/Calibration/Collector.h"
#include "kvprec/Calibration/Generation.h"
#include "kvprec/Calibration/Tokenizer.h"

#include "TestUtils.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>

using namespace llvm;
using namespace kvprec::calib;
using namespace kvprec::calib::test;

namespace {

/// Keeps a copy of every step, to recompute the statistics naively.
struct Step {
  int sequence, layer, position;
  std::vector<float> queries, key, value, weights; // weights [heads, p+1]
};

class Tee : public AttentionObserver {
public:
  Tee(AttentionObserver &next, int numHeads) : next(next), numHeads(numHeads) {}
  void observe(const AttentionStep &step) override {
    if (step.layer == 0 && step.position == 0)
      ++sequence;
    Step copy{sequence,
              step.layer,
              step.position,
              step.queries.vec(),
              step.key.vec(),
              step.value.vec(),
              {}};
    for (int h = 0; h < numHeads; ++h) {
      ArrayRef<float> w = step.getWeights(h);
      copy.weights.insert(copy.weights.end(), w.begin(), w.end());
    }
    steps.push_back(std::move(copy));
    next.observe(step);
  }
  AttentionObserver &next;
  int numHeads;
  int sequence = -1;
  std::vector<Step> steps;
};

TEST(CollectorTest, MatchesNaiveReduction) {
  TempDir dir;
  LlamaConfig config = getTinyConfig();
  std::string path = dir.path("tiny.bin");
  writeFile(path, makeCheckpoint(config, 11));
  Expected<LlamaModel> model = LlamaModel::load(path);
  ASSERT_TRUE(bool(model));

  PositionClasses classes{/*sink=*/2, /*window=*/5, /*block=*/4};
  StatsCollector collector(model->getConfig(), classes);
  Tee tee(collector, config.numHeads);
  LlamaRunner runner(*model);
  Sampler greedy(0.0f, 0);
  GenerationOptions options;
  options.steps = 12;
  options.runLastToken = true;
  std::vector<std::vector<int>> prompts = {{1, 4, 9, 16}, {1, 25}, {1, 3}};
  int maxPositions = 0;
  for (const std::vector<int> &prompt : prompts) {
    Expected<GenerationResult> result =
        generate(runner, prompt, greedy, options, &tee);
    ASSERT_TRUE(bool(result)) << errorMessage(result);
    maxPositions = std::max(maxPositions, result->positionsRun);
    EXPECT_EQ(result->tokens.size(), size_t(result->positionsRun));
  }
  Expected<CalibrationStats> stats = collector.finish("tiny", 3, 12);
  ASSERT_TRUE(bool(stats)) << errorMessage(stats);
  EXPECT_EQ(errorMessage(validateCalibrationStats(*stats, "collected")), "");

  const CalibrationShape &shape = stats->shape;
  EXPECT_EQ(shape.maxPositions, maxPositions);
  EXPECT_EQ(shape.qHeads, 4);
  EXPECT_EQ(stats->model, "tiny");
  EXPECT_FALSE(stats->synthetic);
  const int L = config.numLayers, H = config.numKVHeads,
            G = config.getQueryHeadsPerKVHead(), D = config.getHeadSize();
  const int S = 2, W = 5, B = 4;
  const int NB = shape.getNumBodyBlocks(), NA = shape.getNumAbsoluteBlocks();

  // Naive recomputation.
  std::vector<double> sink(L * H, 0), window(L * H, 0), sinkSum(L * H, 0),
      windowSum(L * H, 0), entropySum(L * H, 0), maxWeight(L * H, 0),
      l1(L * H, 0), body(L * H * NB, 0), qAbs(L * H * D, 0);
  std::vector<int64_t> queries(L * H, 0), positions(NA, 0);
  for (const Step &step : tee.steps) {
    int p = step.position;
    if (step.layer == 0)
      ++positions[p / B];
    for (int kv = 0; kv < H; ++kv) {
      int lh = step.layer * H + kv;
      for (int g = 0; g < G; ++g) {
        int h = kv * G + g;
        const float *w = step.weights.data() + h * (p + 1);
        double s = 0, win = 0, ent = 0, big = 0;
        std::vector<double> blocks(NB, 0);
        for (int t = 0; t <= p; ++t) {
          int distance = p - t;
          if (t < S)
            s += w[t];
          else if (distance < W)
            win += w[t];
          else
            blocks[(distance - W) / B] += w[t];
          if (w[t] > 0)
            ent -= w[t] * std::log(double(w[t]));
          big = std::max(big, double(w[t]));
        }
        sink[lh] = std::max(sink[lh], s);
        window[lh] = std::max(window[lh], win);
        sinkSum[lh] += s;
        windowSum[lh] += win;
        entropySum[lh] += ent;
        maxWeight[lh] = std::max(maxWeight[lh], big);
        for (int j = 0; j < NB; ++j)
          body[lh * NB + j] = std::max(body[lh * NB + j], blocks[j]);
        double norm = 0;
        for (int j = 0; j < D; ++j) {
          double a = std::fabs(step.queries[h * D + j]);
          norm += a;
          qAbs[lh * D + j] = std::max(qAbs[lh * D + j], a);
        }
        l1[lh] = std::max(l1[lh], norm);
        ++queries[lh];
      }
    }
  }
  for (int lh = 0; lh < L * H; ++lh) {
    EXPECT_NEAR(stats->attnSinkMass[lh], sink[lh], 1e-6);
    EXPECT_NEAR(stats->attnWindowMass[lh], window[lh], 1e-6);
    EXPECT_NEAR(stats->attnSinkMassMean[lh], sinkSum[lh] / queries[lh], 1e-6);
    EXPECT_NEAR(stats->attnWindowMassMean[lh], windowSum[lh] / queries[lh],
                1e-6);
    EXPECT_NEAR(stats->attnEntropyMean[lh], entropySum[lh] / queries[lh], 1e-5);
    EXPECT_NEAR(stats->attnMaxWeight[lh], maxWeight[lh], 1e-7);
    EXPECT_NEAR(stats->qL1Max[lh], l1[lh], 1e-4);
    EXPECT_EQ(stats->queryCount[lh], queries[lh]);
    for (int j = 0; j < NB; ++j)
      EXPECT_NEAR(stats->attnBodyMass[lh * NB + j], body[lh * NB + j], 1e-6);
    for (int j = 0; j < D; ++j)
      EXPECT_FLOAT_EQ(stats->qAbsMax[lh * D + j], qAbs[lh * D + j]);
  }
  EXPECT_EQ(stats->positionCount, positions);
  int64_t totalPositions = 0;
  for (const Step &step : tee.steps)
    totalPositions += step.layer == 0;
  EXPECT_EQ(stats->queryCount[0], totalPositions * G);

  // qk_logit_max: every query head of the group against every cached key
  // t <= p of the same sequence and layer, as (1/sqrt D) sum_j |q_j| |K_tj|.
  // Steps are recorded in order, so the keys of a sequence's layer up to p
  // are the earlier steps of that (sequence, layer).
  std::vector<double> logit(L * H, 0);
  for (const Step &step : tee.steps) {
    std::vector<const Step *> cached;
    for (const Step &other : tee.steps)
      if (other.sequence == step.sequence && other.layer == step.layer &&
          other.position <= step.position)
        cached.push_back(&other);
    ASSERT_EQ(cached.size(), size_t(step.position + 1));
    for (int kv = 0; kv < H; ++kv)
      for (int g = 0; g < G; ++g) {
        const float *q = step.queries.data() + (kv * G + g) * D;
        for (const Step *other : cached) {
          const float *k = other->key.data() + kv * D;
          double sum = 0;
          for (int j = 0; j < D; ++j)
            sum += std::fabs(double(q[j])) * std::fabs(double(k[j]));
          double &slot = logit[step.layer * H + kv];
          slot = std::max(slot, sum / std::sqrt(double(D)));
        }
      }
  }
  for (int lh = 0; lh < L * H; ++lh) {
    EXPECT_NEAR(stats->qkLogitMax[lh], logit[lh], 1e-5 * logit[lh]);
    EXPECT_GT(stats->qkLogitMax[lh], 0.0f);
    // At most the channel-wise bound, and here strictly inside it.
    EXPECT_LT(stats->qkLogitMax[lh], getChannelwiseLogitBound(*stats, lh));
  }

  // K/V: channel ranges over everything; block spans within one sequence.
  for (int layer = 0; layer < L; ++layer)
    for (int kv = 0; kv < H; ++kv) {
      int lh = layer * H + kv;
      for (int useV = 0; useV < 2; ++useV) {
        const std::vector<float> &chanMin =
            useV ? stats->vChanMin : stats->kChanMin;
        const std::vector<float> &chanMax =
            useV ? stats->vChanMax : stats->kChanMax;
        const std::vector<float> &absMax =
            useV ? stats->vBlockAbsMax : stats->kBlockAbsMax;
        const std::vector<float> &tokenRange =
            useV ? stats->vBlockTokenRange : stats->kBlockTokenRange;
        const std::vector<float> &chanSpan =
            useV ? stats->vBlockChanSpan : stats->kBlockChanSpan;
        for (int j = 0; j < D; ++j) {
          float lo = INFINITY, hi = -INFINITY;
          for (const Step &step : tee.steps) {
            if (step.layer != layer)
              continue;
            float x = (useV ? step.value : step.key)[kv * D + j];
            lo = std::min(lo, x);
            hi = std::max(hi, x);
          }
          EXPECT_EQ(chanMin[lh * D + j], lo);
          EXPECT_EQ(chanMax[lh * D + j], hi);
        }
        for (int a = 0; a < NA; ++a) {
          float expectAbs = 0, expectRange = 0, expectSpan = 0;
          for (int seq = 0; seq <= tee.sequence; ++seq) {
            std::vector<float> lo(D, INFINITY), hi(D, -INFINITY);
            for (const Step &step : tee.steps) {
              if (step.layer != layer || step.sequence != seq ||
                  step.position / B != a)
                continue;
              const float *x = (useV ? step.value : step.key).data() + kv * D;
              float tokenLo = INFINITY, tokenHi = -INFINITY;
              for (int j = 0; j < D; ++j) {
                expectAbs = std::max(expectAbs, std::fabs(x[j]));
                tokenLo = std::min(tokenLo, x[j]);
                tokenHi = std::max(tokenHi, x[j]);
                lo[j] = std::min(lo[j], x[j]);
                hi[j] = std::max(hi[j], x[j]);
              }
              expectRange = std::max(expectRange, tokenHi - tokenLo);
            }
            for (int j = 0; j < D; ++j)
              if (hi[j] >= lo[j])
                expectSpan = std::max(expectSpan, hi[j] - lo[j]);
          }
          EXPECT_EQ(absMax[lh * NA + a], expectAbs) << "block " << a;
          EXPECT_EQ(tokenRange[lh * NA + a], expectRange) << "block " << a;
          EXPECT_EQ(chanSpan[lh * NA + a], expectSpan) << "block " << a;
        }
      }
    }
}

TEST(CollectorTest, NothingObservedIsAnError) {
  StatsCollector collector(getTinyConfig(), PositionClasses());
  Expected<CalibrationStats> stats = collector.finish("tiny", 0, 0);
  EXPECT_NE(errorMessage(stats).find("no attention steps were observed"),
            std::string::npos);
}

TEST(CollectorTest, Stories260KStatisticsAreValid) {
  std::optional<std::string> models = getStories260KDir();
  if (!models)
    GTEST_SKIP() << "KVPREC_MODELS_DIR/stories260K not available";
  Expected<LlamaModel> model = LlamaModel::load(*models + "/stories260K.bin");
  ASSERT_TRUE(bool(model));
  Expected<Tokenizer> tokenizer = Tokenizer::load(*models + "/tok512.bin", 512);
  ASSERT_TRUE(bool(tokenizer));
  StatsCollector collector(model->getConfig(), PositionClasses());
  LlamaRunner runner(*model);
  Sampler greedy(0.0f, 0);
  GenerationOptions options;
  options.steps = 100;
  options.runLastToken = true;
  Expected<std::vector<int>> prompt =
      tokenizer->encode("Once upon a time", true, false);
  ASSERT_TRUE(bool(prompt));
  ASSERT_TRUE(bool(generate(runner, *prompt, greedy, options, &collector)));
  Expected<CalibrationStats> stats = collector.finish(model->getName(), 1, 100);
  ASSERT_TRUE(bool(stats)) << errorMessage(stats);
  EXPECT_EQ(stats->shape.maxPositions, 105);
  EXPECT_EQ(stats->shape.getNumBodyBlocks(), 2); // ceil(41 / 32)
  EXPECT_EQ(stats->shape.getNumAbsoluteBlocks(), 4);
  EXPECT_EQ(stats->queryCount[0], 105 * 2);
  // PROVENANCE.md: K |max| per layer 18..30 and V |max| 3.6 over 256 tokens.
  float kMax = 0, vMax = 0;
  for (float x : stats->kBlockAbsMax)
    kMax = std::max(kMax, x);
  for (float x : stats->vBlockAbsMax)
    vMax = std::max(vMax, x);
  EXPECT_GT(kMax, 10.0f);
  EXPECT_LT(kMax, 40.0f);
  EXPECT_GT(vMax, 1.0f);
  EXPECT_LT(vMax, 6.0f);
  // The logit envelope is well inside its channel-wise bound: the largest
  // |q_j| and |K_j| of different channels do not meet in one pair.
  for (size_t lh = 0; lh < stats->qkLogitMax.size(); ++lh) {
    EXPECT_GT(stats->qkLogitMax[lh], 0.0f);
    EXPECT_LT(stats->qkLogitMax[lh], getChannelwiseLogitBound(*stats, lh));
  }
}

} // namespace
