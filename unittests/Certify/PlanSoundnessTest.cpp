//===- PlanSoundnessTest.cpp - certificates against emulated caches -------===//
//
// The production path end to end on data whose statistics are known: random
// attention steps (outlier channels, a sink-heavy and a local head) are fed
// to the StatsCollector, plans are certified from the collected statistics
// with certifyPlanHead, the same sequences are stored by the plan emulator,
// and every query's measured error (exact attention in long double over the
// stored cache) is compared with the static certificate and the run-time
// certificate. Inside the envelopes both must hold in every case. Then the
// values are scaled out of their calibrated ranges (which changes neither
// the attention masses nor |q| nor the logits): the static certificate,
// whose kv_ranges assumption is now false, must be seen to fail, and the
// run-time certificate, which assumes none of the envelopes, must still hold.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/Plan.h"
#include "kvprec/Certify/PlanEmulation.h"
#include "kvprec/Certify/ReferenceCertifier.h"

#include "kvprec/Analysis/Bound.h"
#include "kvprec/Calibration/Collector.h"
#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;
namespace calib = kvprec::calib;

namespace {

constexpr int kHeadDim = 8, kQueryHeads = 4, kKVHeads = 2, kLength = 48;

/// One sequence of a 1-layer model: per position the queries, key and value
/// of every head.
struct Sequence {
  std::vector<std::vector<float>> queries, keys, values;
};

Sequence makeSequence(std::mt19937 &rng, float queryScale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Sequence s;
  for (int p = 0; p < kLength; ++p) {
    std::vector<float> q(kQueryHeads * kHeadDim), k(kKVHeads * kHeadDim),
        v(kKVHeads * kHeadDim);
    for (int h = 0; h < kQueryHeads; ++h)
      for (int j = 0; j < kHeadDim; ++j)
        // Channel 3 is an outlier channel of the queries.
        q[h * kHeadDim + j] =
            normal(rng) * (j == 3 ? 3.0f : 1.0f) * queryScale;
    for (int h = 0; h < kKVHeads; ++h)
      for (int j = 0; j < kHeadDim; ++j) {
        // KV head 0 puts large keys on the first positions (a sink head);
        // channel 5 is a key outlier channel.
        float scale = (h == 0 && p < 2 ? 3.0f : 1.0f) * (j == 5 ? 4.0f : 1.0f);
        k[h * kHeadDim + j] = normal(rng) * scale;
        v[h * kHeadDim + j] = normal(rng) * (j == 1 ? 2.0f : 1.0f);
      }
    s.queries.push_back(std::move(q));
    s.keys.push_back(std::move(k));
    s.values.push_back(std::move(v));
  }
  return s;
}

calib::LlamaConfig makeConfig() {
  calib::LlamaConfig config;
  config.dim = kQueryHeads * kHeadDim;
  config.hiddenDim = 16;
  config.numLayers = 1;
  config.numHeads = kQueryHeads;
  config.numKVHeads = kKVHeads;
  config.vocabSize = 4;
  config.seqLen = kLength;
  return config;
}

/// Feeds `sequences` to a collector as the model's attention would produce
/// them (softmax at scale 1/sqrt(head_dim), in float).
calib::CalibrationStats collect(const std::vector<Sequence> &sequences,
                                const calib::PositionClasses &classes,
                                int64_t querySamples = 0) {
  calib::StatsCollector collector(makeConfig(), classes, querySamples);
  const int group = kQueryHeads / kKVHeads;
  for (const Sequence &s : sequences) {
    std::vector<float> keys, weights(kQueryHeads * kLength);
    for (int p = 0; p < kLength; ++p) {
      for (int h = 0; h < kQueryHeads; ++h) {
        int kv = h / group;
        float largest = -INFINITY;
        for (int t = 0; t <= p; ++t) {
          float dot = 0;
          for (int j = 0; j < kHeadDim; ++j)
            dot += s.queries[p][h * kHeadDim + j] *
                   s.keys[t][kv * kHeadDim + j];
          weights[h * kLength + t] = dot / std::sqrt(float(kHeadDim));
          largest = std::max(largest, weights[h * kLength + t]);
        }
        float sum = 0;
        for (int t = 0; t <= p; ++t)
          sum += weights[h * kLength + t] =
              std::exp(weights[h * kLength + t] - largest);
        for (int t = 0; t <= p; ++t)
          weights[h * kLength + t] /= sum;
      }
      calib::AttentionStep step;
      step.layer = 0;
      step.position = p;
      step.queries = s.queries[p];
      step.key = s.keys[p];
      step.value = s.values[p];
      step.weights = weights;
      step.weightStride = kLength;
      collector.observe(step);
    }
  }
  llvm::Expected<calib::CalibrationStats> stats =
      collector.finish("synthetic-steps", sequences.size(), kLength);
  EXPECT_TRUE(bool(stats)) << llvm::toString(stats.takeError());
  return std::move(*stats);
}

/// max_j |o^_j - o_j| of exact attention over the stored cache against the
/// exact one, formed term by term in long double.
double measureError(const std::vector<double> &q, const an::Matrix &exactK,
                    const an::Matrix &storedK, const an::Matrix &exactV,
                    const an::Matrix &storedV) {
  auto weights = [&](const an::Matrix &keys) {
    std::vector<long double> w(keys.rows);
    long double largest = -INFINITY, sum = 0;
    for (size_t t = 0; t < keys.rows; ++t) {
      long double dot = 0;
      for (size_t j = 0; j < keys.cols; ++j)
        dot += (long double)q[j] * keys(t, j);
      w[t] = dot / std::sqrt((long double)keys.cols);
      largest = std::max(largest, w[t]);
    }
    for (long double &x : w)
      sum += x = std::exp(x - largest);
    for (long double &x : w)
      x /= sum;
    return w;
  };
  std::vector<long double> a = weights(exactK), aHat = weights(storedK);
  double worst = 0;
  for (size_t j = 0; j < exactV.cols; ++j) {
    long double d = 0;
    for (size_t t = 0; t < exactV.rows; ++t)
      d += (aHat[t] - a[t]) * exactV(t, j) +
           aHat[t] * ((long double)storedV(t, j) - exactV(t, j));
    worst = std::max(worst, (double)std::fabs(d));
  }
  return worst;
}

struct Outcome {
  int64_t cases = 0, staticViolations = 0, runtimeViolations = 0;
  double worstRatio = 0;
};

/// Stores `sequences` as `plan` says and checks every query of every
/// position against the static bounds `bounds` (per KV head) and the
/// run-time certificate.
Outcome evaluate(const Plan &plan, const std::vector<double> &bounds,
                 const std::vector<Sequence> &sequences, float valueScale,
                 const an::ConcentrationLevels *levels = nullptr) {
  Outcome outcome;
  const int group = kQueryHeads / kKVHeads;
  for (const Sequence &s : sequences) {
    std::vector<EmulatedStream> streams;
    for (int64_t item = 0; item < plan.getNumItems(); ++item)
      streams.emplace_back(plan, item, an::DequantizerConfig());
    for (int p = 0; p < kLength; ++p) {
      for (int h = 0; h < kKVHeads; ++h) {
        std::vector<float> value(s.values[p].begin() + h * kHeadDim,
                                 s.values[p].begin() + (h + 1) * kHeadDim);
        for (float &x : value)
          x *= valueScale;
        EXPECT_TRUE(streams[plan.getItem(0, h, 0)]
                        .append(s.keys[p].data() + h * kHeadDim)
                        .ok());
        EXPECT_TRUE(streams[plan.getItem(0, h, 1)].append(value.data())
                        .ok());
      }
      for (int qh = 0; qh < kQueryHeads; ++qh) {
        int h = qh / group;
        const EmulatedStream &keys = streams[plan.getItem(0, h, 0)];
        const EmulatedStream &values = streams[plan.getItem(0, h, 1)];
        std::vector<double> q(s.queries[p].begin() + qh * kHeadDim,
                              s.queries[p].begin() + (qh + 1) * kHeadDim);
        double error = measureError(q, keys.getExact(), keys.getStored(),
                                    values.getExact(), values.getStored());
        an::RuntimeCertificate runtime;
        EXPECT_TRUE(an::computeRuntimeCertificate(
                        q, keys.getStored(), values.getStored(),
                        keys.getErrorBounds(), values.getErrorBounds(),
                        runtime, levels)
                        .ok());
        ++outcome.cases;
        outcome.staticViolations += error > bounds[h];
        outcome.runtimeViolations += error > runtime.infNorm;
        outcome.worstRatio = std::max(outcome.worstRatio, error / bounds[h]);
      }
    }
  }
  return outcome;
}

Plan makePlan(const calib::PositionClasses &classes,
              std::vector<an::StorageFormat> formats, int8_t sink,
              int8_t window, std::vector<int8_t> body, bool perBlock) {
  Plan plan;
  plan.geometry.layers = 1;
  plan.geometry.heads = kKVHeads;
  plan.geometry.capacity = kLength;
  plan.geometry.headDim = kHeadDim;
  plan.geometry.block = classes.block;
  plan.geometry.sink = classes.sink;
  plan.geometry.window = classes.window;
  plan.formats = std::move(formats);
  plan.sinkFormats.assign(plan.getNumItems(), sink);
  plan.windowFormats.assign(plan.getNumItems(), window);
  plan.bodyFormats = std::move(body);
  plan.perBlock = perBlock;
  return plan;
}

an::StorageFormat tokens(an::StorageKind kind, unsigned group) {
  return an::StorageFormat::scaled(kind, an::QuantScheme::Asymmetric,
                                   an::Granularity::TokenGroup, group,
                                   an::StorageKind::F16);
}
an::StorageFormat channels(an::StorageKind kind, unsigned group) {
  return an::StorageFormat::scaled(kind, an::QuantScheme::Asymmetric,
                                   an::Granularity::ChannelGroup, group,
                                   an::StorageKind::F16);
}
an::StorageFormat unscaled(an::StorageKind kind) {
  return an::StorageFormat::unscaled(kind);
}

} // namespace

TEST(PlanSoundness, StaticAndRuntimeCertificatesHoldInsideTheEnvelopes) {
  std::mt19937 rng(11);
  std::vector<Sequence> sequences;
  for (int i = 0; i < 6; ++i)
    sequences.push_back(makeSequence(rng));
  calib::PositionClasses classes{4, 16, 8};
  calib::CalibrationStats stats = collect(sequences, classes);
  ASSERT_EQ(stats.shape.maxPositions, kLength);

  using K = an::StorageKind;
  int64_t items = kKVHeads * 2, blocks = (kLength - 4 + 7) / 8;
  std::vector<int8_t> perBlock(items * blocks);
  for (size_t i = 0; i < perBlock.size(); ++i)
    perBlock[i] = i % 3 == 0 ? 2 : 1;
  struct Case {
    const char *name;
    Plan plan;
  } cases[] = {
      {"f32 keys, i4 values",
       makePlan(classes, {unscaled(K::F32), tokens(K::Int4, 8)}, 0, 0,
                {0, 1, 0, 1}, false)},
      {"f16 keys, i8 values",
       makePlan(classes, {unscaled(K::F16), tokens(K::Int8, 8)}, 0, 0,
                {0, 1, 0, 1}, false)},
      {"uniform i8", makePlan(classes, {tokens(K::Int8, 8)}, 0, 0, {0}, false)},
      {"uniform i4", makePlan(classes, {tokens(K::Int4, 8)}, 0, 0, {0}, false)},
      {"f16 sink and window, i4 body with demotion",
       makePlan(classes, {unscaled(K::F16), tokens(K::Int4, 4)}, 0, 0,
                std::vector<int8_t>(items, 1), false)},
      {"i8 window, i2 body (double quantization on demotion)",
       makePlan(classes, {unscaled(K::F16), tokens(K::Int8, 8),
                          tokens(K::Int2, 8)},
                0, 1, std::vector<int8_t>(items, 2), false)},
      {"channel groups of 4 in window and body",
       makePlan(classes, {unscaled(K::BF16), channels(K::Int4, 4)}, 0, 1,
                std::vector<int8_t>(items, 1), false)},
      {"fp8 everywhere",
       makePlan(classes,
                {an::StorageFormat::scaled(K::F8E4M3FN,
                                           an::QuantScheme::Symmetric,
                                           an::Granularity::TokenGroup, 8,
                                           K::F16)},
                0, 0, {0}, false)},
      {"per-block body", makePlan(classes, {unscaled(K::F16), tokens(K::Int8, 8),
                                            tokens(K::Int4, 8)},
                                  0, 0, perBlock, true)},
  };
  // The first two cases keep K and V apart in every class.
  for (int i = 0; i < 2; ++i) {
    cases[i].plan.sinkFormats = cases[i].plan.bodyFormats;
    cases[i].plan.windowFormats = cases[i].plan.bodyFormats;
  }
  for (Case &c : cases) {
    if (c.plan.bodyFormats.size() == 1)
      c.plan.bodyFormats.assign(items, c.plan.bodyFormats[0]);
    std::vector<double> bounds;
    for (int h = 0; h < kKVHeads; ++h) {
      an::StaticCertifiedBound bound;
      double keyLogitError = 0;
      ASSERT_TRUE(certifyPlanHead(stats, c.plan, 0, h, CertifyOptions(), bound,
                                  keyLogitError)
                      .ok())
          << c.name;
      bounds.push_back(bound.infNorm);
    }
    Outcome outcome = evaluate(c.plan, bounds, sequences, 1.0f);
    EXPECT_EQ(outcome.staticViolations, 0) << c.name;
    EXPECT_EQ(outcome.runtimeViolations, 0) << c.name;
    EXPECT_EQ(outcome.cases, 6 * kLength * kQueryHeads);
    std::printf("%-52s static bound %.3g / %.3g, worst error/bound %.3f\n",
                c.name, bounds[0], bounds[1], outcome.worstRatio);
  }
}

TEST(PlanSoundness, RuntimeCertificateHoldsWhereValuesLeaveTheirRanges) {
  // Calibrate on the sequences, then store the same sequences with values
  // eight times larger: attention weights, |q| and the logits are exactly the
  // calibrated ones, so only the kv_ranges assumption is broken. Exact keys
  // and peaked attention (large queries) make the value term of the bound
  // nearly attained, so the broken assumption shows.
  std::mt19937 rng(5);
  std::vector<Sequence> sequences;
  for (int i = 0; i < 4; ++i)
    sequences.push_back(makeSequence(rng, 4.0f));
  calib::PositionClasses classes{4, 16, 8};
  calib::CalibrationStats stats = collect(sequences, classes);
  using K = an::StorageKind;
  Plan plan = makePlan(classes, {unscaled(K::F32), tokens(K::Int2, 8)}, 0, 0,
                       {0, 1, 0, 1}, false);
  plan.sinkFormats = plan.windowFormats = plan.bodyFormats;
  std::vector<double> bounds;
  for (int h = 0; h < kKVHeads; ++h) {
    an::StaticCertifiedBound bound;
    double keyLogitError = 0;
    ASSERT_TRUE(certifyPlanHead(stats, plan, 0, h, CertifyOptions(), bound,
                                keyLogitError)
                    .ok());
    bounds.push_back(bound.infNorm);
  }
  Outcome inside = evaluate(plan, bounds, sequences, 1.0f);
  EXPECT_EQ(inside.staticViolations, 0);
  Outcome outside = evaluate(plan, bounds, sequences, 8.0f);
  // The static bound rests on kv_ranges: outside them it fails...
  EXPECT_GT(outside.staticViolations, 0);
  EXPECT_GT(outside.worstRatio, 1.0);
  // ...and the run-time certificate, which needs no envelope, holds.
  EXPECT_EQ(outside.runtimeViolations, 0);
  std::printf("values x8: %lld of %lld cases above the static bound (worst "
              "%.2fx), 0 above the run-time certificate\n",
              (long long)outside.staticViolations, (long long)outside.cases,
              outside.worstRatio);
}

TEST(PlanSoundness, JointCertificateHoldsAndIsTighter) {
  // Every query kept as a sample (N above the query count): the joint
  // certificate is the worst per-query bound over exactly the evaluated
  // queries, so it must hold on them, and it must never exceed the
  // coordinate-wise one. Both certifiers must agree on it.
  std::mt19937 rng(17);
  std::vector<Sequence> sequences;
  for (int i = 0; i < 4; ++i)
    sequences.push_back(makeSequence(rng));
  calib::PositionClasses classes{4, 16, 8};
  calib::CalibrationStats stats = collect(sequences, classes, 100000);
  ASSERT_EQ(stats.querySampleCount[0], 4 * kLength * 2);
  using K = an::StorageKind;
  int64_t items = kKVHeads * 2;
  Plan plans[] = {
      makePlan(classes, {unscaled(K::F32), tokens(K::Int4, 8)}, 0, 0,
               {0, 1, 0, 1}, false),
      makePlan(classes, {unscaled(K::F16), tokens(K::Int8, 8)}, 0, 0,
               std::vector<int8_t>(items, 1), false),
      makePlan(classes, {unscaled(K::BF16), channels(K::Int4, 4)}, 0, 1,
               std::vector<int8_t>(items, 1), false),
  };
  plans[0].sinkFormats = plans[0].windowFormats = plans[0].bodyFormats;
  int tighter = 0;
  for (Plan &plan : plans) {
    std::vector<double> joint;
    for (int h = 0; h < kKVHeads; ++h) {
      CertifyOptions coordinateOnly;
      coordinateOnly.jointEnvelope = false;
      an::StaticCertifiedBound a, b;
      double keyLogitError = 0, reference = 0;
      ASSERT_TRUE(certifyPlanHead(stats, plan, 0, h, CertifyOptions(), a,
                                  keyLogitError)
                      .ok());
      ASSERT_TRUE(certifyPlanHead(stats, plan, 0, h, coordinateOnly, b,
                                  keyLogitError)
                      .ok());
      ASSERT_TRUE(certifyHeadByPosition(stats, plan, 0, h, CertifyOptions(),
                                        reference)
                      .ok());
      EXPECT_LE(a.infNorm, b.infNorm * (1 + 1e-12));
      EXPECT_NEAR(a.infNorm, reference, 1e-12 * a.infNorm);
      tighter += a.infNorm < 0.9 * b.infNorm;
      joint.push_back(a.infNorm);
    }
    Outcome outcome = evaluate(plan, joint, sequences, 1.0f);
    EXPECT_EQ(outcome.staticViolations, 0);
    std::printf("joint bound %.3g / %.3g, worst error/bound %.3f\n", joint[0],
                joint[1], outcome.worstRatio);
  }
  EXPECT_GT(tighter, 0);
}

TEST(PlanSoundness, JointCertificateRestsOnItsSamples) {
  // The joint certificate assumes a new query's bound is no larger than the
  // worst sampled query's (sampled_query_bound). Samples that miss the large
  // queries break it: keep 2 samples per head and make them the smallest
  // queries possible (|q| and the logit envelope 0, still inside every
  // envelope). The static bound then fails on the real queries, while the
  // run-time certificate, which needs no envelope, holds.
  std::mt19937 rng(17);
  std::vector<Sequence> sequences;
  for (int i = 0; i < 4; ++i)
    sequences.push_back(makeSequence(rng, 4.0f));
  calib::PositionClasses classes{4, 16, 8};
  calib::CalibrationStats stats = collect(sequences, classes, 2);
  std::fill(stats.querySampleAbsQ.begin(), stats.querySampleAbsQ.end(), 0.0f);
  std::fill(stats.querySampleLogit.begin(), stats.querySampleLogit.end(),
            0.0f);
  ASSERT_EQ(llvm::toString(calib::validateCalibrationStats(stats, "edited")),
            "");
  using K = an::StorageKind;
  Plan plan = makePlan(classes, {tokens(K::Int4, 8)}, 0, 0,
                       std::vector<int8_t>(kKVHeads * 2, 0), false);
  std::vector<double> bounds;
  for (int h = 0; h < kKVHeads; ++h) {
    an::StaticCertifiedBound bound;
    double keyLogitError = 0;
    ASSERT_TRUE(certifyPlanHead(stats, plan, 0, h, CertifyOptions(), bound,
                                keyLogitError)
                    .ok());
    bounds.push_back(bound.infNorm);
  }
  Outcome outcome = evaluate(plan, bounds, sequences, 1.0f);
  EXPECT_GT(outcome.staticViolations, 0);
  EXPECT_EQ(outcome.runtimeViolations, 0);
  std::printf("samples with |q| = 0: %lld of %lld cases above the joint "
              "bound (worst %.2fx), 0 above the run-time certificate\n",
              (long long)outcome.staticViolations, (long long)outcome.cases,
              outcome.worstRatio);
}

TEST(PlanSoundness, ProbabilisticCertificateHoldsAndIsTighter) {
  // certificate=probabilistic (error-bounds.md §9) on the stored caches of
  // round-to-nearest quantizers: its static and run-time bounds must hold
  // on every evaluated query, never exceed the deterministic ones, and the
  // position-by-position certifier must agree with the class-based one.
  std::mt19937 rng(23);
  std::vector<Sequence> sequences;
  for (int i = 0; i < 4; ++i)
    sequences.push_back(makeSequence(rng));
  calib::PositionClasses classes{4, 16, 8};
  using K = an::StorageKind;
  int64_t items = kKVHeads * 2;
  Plan plans[] = {
      makePlan(classes, {unscaled(K::F32), tokens(K::Int4, 8)}, 0, 0,
               {0, 1, 0, 1}, false),
      makePlan(classes, {unscaled(K::F16), tokens(K::Int8, 8)}, 0, 0,
               std::vector<int8_t>(items, 1), false),
      makePlan(classes, {tokens(K::Int8, 8), tokens(K::Int4, 4)}, 0, 0,
               std::vector<int8_t>(items, 1), false),
      makePlan(classes, {unscaled(K::BF16), channels(K::Int4, 4)}, 0, 1,
               std::vector<int8_t>(items, 1), false),
  };
  plans[0].sinkFormats = plans[0].windowFormats = plans[0].bodyFormats;
  CertifyOptions probabilistic;
  probabilistic.certificate = CertificateKind::Probabilistic;
  probabilistic.failureProbability = 1e-9;
  // Joint (every query a sample) and coordinate-wise envelopes.
  for (int64_t samples : {int64_t(100000), int64_t(0)}) {
    calib::CalibrationStats stats = collect(sequences, classes, samples);
    an::ConcentrationLevels levels = getConcentrationLevels(
        1e-9, stats.shape.qHeads, kLength, kHeadDim);
    int tighter = 0;
    for (Plan &plan : plans) {
      std::vector<double> bounds;
      for (int h = 0; h < kKVHeads; ++h) {
        an::StaticCertifiedBound p, d;
        double keyLogitError = 0, reference = 0;
        ASSERT_TRUE(certifyPlanHead(stats, plan, 0, h, probabilistic, p,
                                    keyLogitError)
                        .ok());
        ASSERT_TRUE(certifyPlanHead(stats, plan, 0, h, CertifyOptions(), d,
                                    keyLogitError)
                        .ok());
        ASSERT_TRUE(certifyHeadByPosition(stats, plan, 0, h, probabilistic,
                                          reference)
                        .ok());
        EXPECT_LE(p.infNorm, d.infNorm * (1 + 1e-12));
        EXPECT_NEAR(p.infNorm, reference, 1e-12 * p.infNorm);
        tighter += p.infNorm < 0.9 * d.infNorm;
        bounds.push_back(p.infNorm);
      }
      Outcome outcome = evaluate(plan, bounds, sequences, 1.0f, &levels);
      EXPECT_EQ(outcome.staticViolations, 0);
      EXPECT_EQ(outcome.runtimeViolations, 0);
      std::printf("probabilistic (%s) bound %.3g / %.3g, worst error/bound "
                  "%.3f\n",
                  samples ? "joint" : "coordinate-wise", bounds[0], bounds[1],
                  outcome.worstRatio);
    }
    // Per-sample sums of squared weights are what it gains from; the
    // coordinate-wise bound through attn_max_weight gains little here.
    if (samples) {
      EXPECT_GT(tighter, 0);
    }
  }
}

TEST(PlanSoundness, ProbabilisticLevelsGrowWithTheUnionBound) {
  // lambda = sqrt(2 ln(2 n / p)) with p = P / (3 heads): more positions,
  // channels or heads, or a smaller P, all need a larger level.
  an::ConcentrationLevels base = getConcentrationLevels(1e-9, 8, 512, 64);
  EXPECT_NEAR(base.logit,
              std::sqrt(2 * std::log(2 * 512 / (1e-9 / (3 * 8)))), 1e-12);
  EXPECT_NEAR(base.value, std::sqrt(2 * std::log(2 * 64 / (1e-9 / (3 * 8)))),
              1e-12);
  EXPECT_EQ(base.key, base.value);
  EXPECT_GT(getConcentrationLevels(1e-12, 8, 512, 64).logit, base.logit);
  EXPECT_GT(getConcentrationLevels(1e-9, 80, 512, 64).logit, base.logit);
  EXPECT_GT(getConcentrationLevels(1e-9, 8, 4096, 64).logit, base.logit);
  EXPECT_GT(getConcentrationLevels(1e-9, 8, 512, 128).value, base.value);
}
