//===- ReferenceCertifierTest.cpp - two certifiers, one certificate -------===//
//
// The position-by-position certifier of kvprec-verify-plan against the
// allocator's class-based one on random plans over synthetic calibrations:
// uniform bodies (where the two compute the same quantity, so they must
// agree to rounding), per-block bodies (where the class-based one may pair
// the largest logit error and value error of different blocks, so it may
// only be larger), shorter sinks than the calibration's, and extrapolation
// past the calibrated length. Then a plan whose certifier is handed a
// looser calibration than the plan was made for: the reference must not
// agree with a bound computed from the wrong statistics.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Certify/ReferenceCertifier.h"

#include "kvprec/Calibration/Synthetic.h"
#include "gtest/gtest.h"

#include <cmath>
#include <cstdio>
#include <random>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;
namespace calib = kvprec::calib;

namespace {

calib::CalibrationStats makeStats(int64_t capacity, uint64_t seed) {
  calib::SyntheticOptions options;
  options.layers = 2;
  options.kvHeads = 2;
  options.qHeads = 4;
  options.headDim = 8;
  options.capacity = capacity;
  options.block = 8;
  options.sink = 4;
  options.window = 16;
  options.seed = seed;
  llvm::Expected<calib::CalibrationStats> stats =
      calib::generateSyntheticStats(options);
  EXPECT_TRUE(bool(stats));
  return std::move(*stats);
}

std::vector<an::StorageFormat> candidateFormats() {
  using K = an::StorageKind;
  auto scaled = [](K kind, an::Granularity granularity, unsigned group,
                   an::QuantScheme scheme = an::QuantScheme::Asymmetric) {
    return an::StorageFormat::scaled(kind, scheme, granularity, group,
                                     K::F16);
  };
  return {an::StorageFormat::unscaled(K::F32),
          an::StorageFormat::unscaled(K::F16),
          an::StorageFormat::unscaled(K::BF16),
          scaled(K::F8E4M3FN, an::Granularity::TokenGroup, 8,
                 an::QuantScheme::Symmetric),
          scaled(K::F8E5M2, an::Granularity::TokenGroup, 4,
                 an::QuantScheme::Symmetric),
          scaled(K::Int8, an::Granularity::TokenGroup, 8),
          scaled(K::Int4, an::Granularity::TokenGroup, 4),
          scaled(K::Int2, an::Granularity::TokenGroup, 8,
                 an::QuantScheme::Symmetric),
          scaled(K::Int4, an::Granularity::ChannelGroup, 4)};
}

/// A random plan: each (layer, head, K/V) draws its sink, window and body
/// formats; per-block plans draw each block. Channel groups of 4 tile the
/// block (8) and the sink (4 or none).
Plan randomPlan(std::mt19937 &rng, int64_t capacity, int64_t sink,
                int64_t window, bool perBlock) {
  Plan plan;
  plan.geometry = {2, 2, capacity, 8, 8, sink, window};
  plan.formats = candidateFormats();
  std::uniform_int_distribution<int> pick(0, int(plan.formats.size()) - 1);
  int64_t items = plan.getNumItems();
  for (int64_t i = 0; i < items; ++i) {
    plan.sinkFormats.push_back(int8_t(pick(rng)));
    plan.windowFormats.push_back(int8_t(pick(rng)));
  }
  int64_t bodyEntries = perBlock ? items * plan.geometry.getNumBodyBlocks()
                                 : items;
  for (int64_t i = 0; i < bodyEntries; ++i)
    plan.bodyFormats.push_back(int8_t(pick(rng)));
  plan.perBlock = perBlock;
  return plan;
}

} // namespace

TEST(ReferenceCertifier, AgreesWithTheClassCertifier) {
  std::mt19937 rng(3);
  int compared = 0, perBlockCompared = 0;
  double worstRelative = 0, perBlockTightest = INFINITY;
  for (int trial = 0; trial < 120; ++trial) {
    bool perBlock = trial % 3 == 2;
    bool extrapolate = trial % 5 == 4;
    int64_t capacity = 40 + 8 * (trial % 4);
    // A sink of 0 is shorter than the calibration's 4: its positions' mass
    // moves to the window and body envelopes.
    int64_t sink = trial % 4 == 0 ? 0 : 4;
    int64_t window = trial % 6 == 0 ? 0 : 16;
    calib::CalibrationStats stats =
        makeStats(extrapolate ? capacity - 16 : capacity, 100 + trial);
    Plan plan = randomPlan(rng, capacity, sink, window, perBlock);
    CertifyOptions options;
    if (extrapolate) {
      options.extrapolation = Extrapolation::WorstCase;
      options.extrapolationMargin = 1.5;
    }
    for (int64_t layer = 0; layer < 2; ++layer)
      for (int64_t head = 0; head < 2; ++head) {
        an::StaticCertifiedBound classBound;
        double keyLogitError = 0, reference = 0;
        an::Status status = certifyPlanHead(stats, plan, layer, head, options,
                                            classBound, keyLogitError);
        ASSERT_TRUE(status.ok()) << "trial " << trial << ": "
                                 << status.getMessage();
        ASSERT_TRUE(certifyHeadByPosition(stats, plan, layer, head, options,
                                          reference)
                        .ok())
            << "trial " << trial;
        double a = classBound.infNorm;
        if (perBlock) {
          // The class-based bound may combine terms of different blocks.
          // (Only it can overflow to inf where the reference does not.)
          EXPECT_GE(a, reference * (1 - 1e-12)) << "trial " << trial;
          if (std::isfinite(a))
            perBlockTightest = std::min(perBlockTightest, a / reference);
          ++perBlockCompared;
        } else if (!std::isfinite(a) || !std::isfinite(reference)) {
          EXPECT_EQ(std::isfinite(a), std::isfinite(reference))
              << "trial " << trial << ": " << a << " vs " << reference;
        } else {
          double relative = std::fabs(a - reference) / std::max(a, 1e-300);
          EXPECT_LE(relative, 1e-12)
              << "trial " << trial << ": " << a << " vs " << reference;
          worstRelative = std::max(worstRelative, relative);
          ++compared;
        }
      }
  }
  EXPECT_GT(compared, 250);
  EXPECT_GT(perBlockCompared, 100);
  std::printf("uniform bodies: %d heads, worst relative difference %.2g; "
              "per-block: %d heads, class-based / position-by-position >= "
              "%.6f\n",
              compared, worstRelative, perBlockCompared, perBlockTightest);
}

TEST(ReferenceCertifier, ASingleBodyBlockIsNarrowedToItsOwnRanges) {
  // A per-block plan whose body holds one block at full length: that
  // block's keys are small, but a later position's key channel reaches
  // 70000, past f16. The body is f16 (the window f32, so it is not the one
  // that overflows): both certifiers narrow the block to its own absmax and
  // certify it. (The class-based one used to narrow only when the body had
  // two or more blocks, and refused this plan: a certificate fuzzer
  // finding.)
  calib::CalibrationStats stats = makeStats(40, 11);
  size_t lh = stats.index(0, 0);
  int64_t blocks = stats.shape.getNumAbsoluteBlocks();
  stats.kChanMax[lh * 8] = 70000.0f;
  stats.kBlockAbsMax[lh * blocks + blocks - 1] = 70000.0f;
  Plan plan;
  // Window 24 plus the 4 tokens of a partial block leave one body block.
  plan.geometry = {2, 2, 40, 8, 8, 4, 24};
  ASSERT_EQ(plan.geometry.getBodyTokens(), 8);
  plan.formats = {an::StorageFormat::unscaled(an::StorageKind::F16),
                  an::StorageFormat::unscaled(an::StorageKind::F32)};
  plan.perBlock = true;
  int64_t items = plan.getNumItems();
  plan.sinkFormats.assign(items, 0);
  plan.windowFormats.assign(items, 1);
  plan.bodyFormats.assign(items * plan.geometry.getNumBodyBlocks(), 0);
  an::StaticCertifiedBound classBound;
  double keyLogitError = 0, reference = 0;
  an::Status status = certifyPlanHead(stats, plan, 0, 0, CertifyOptions(),
                                      classBound, keyLogitError);
  ASSERT_TRUE(status.ok()) << status.getMessage();
  ASSERT_TRUE(
      certifyHeadByPosition(stats, plan, 0, 0, CertifyOptions(), reference)
          .ok());
  EXPECT_TRUE(std::isfinite(reference));
  EXPECT_GE(classBound.infNorm, reference * (1 - 1e-12));
  EXPECT_LE(classBound.infNorm, reference * (1 + 1e-9));
  // A body in f16 for the block that holds the 70000 is refused by both.
  plan.geometry = {2, 2, 40, 8, 8, 4, 0};
  plan.bodyFormats.assign(items * plan.geometry.getNumBodyBlocks(), 0);
  EXPECT_TRUE(certifyPlanHead(stats, plan, 0, 0, CertifyOptions(), classBound,
                              keyLogitError)
                  .failed());
  EXPECT_TRUE(
      certifyHeadByPosition(stats, plan, 0, 0, CertifyOptions(), reference)
          .failed());
}

TEST(ReferenceCertifier, RefusesWhatTheCalibrationDoesNotCover) {
  calib::CalibrationStats stats = makeStats(32, 7);
  std::mt19937 rng(1);
  Plan plan = randomPlan(rng, 48, 4, 16, false);
  double bound = 0;
  an::Status status =
      certifyHeadByPosition(stats, plan, 0, 0, CertifyOptions(), bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("the cache holds 48 positions but "
                                     "calibration observed only 32"),
            std::string::npos)
      << status.getMessage();
  CertifyOptions atScale4;
  atScale4.softmaxScale = 4.0;
  plan.geometry.capacity = 32;
  status = certifyHeadByPosition(stats, plan, 0, 0, atScale4, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("calibrated at softmax scale"),
            std::string::npos);
}

TEST(ReferenceCertifier, BoundGrowsWithEveryEnvelope) {
  // Widening any one envelope the certificate rests on must not shrink the
  // bound, and widening the value ranges must grow it: the reference reads
  // every statistic it depends on.
  calib::CalibrationStats stats = makeStats(48, 9);
  std::mt19937 rng(4);
  Plan plan = randomPlan(rng, 48, 4, 16, false);
  double base = 0;
  ASSERT_TRUE(
      certifyHeadByPosition(stats, plan, 1, 1, CertifyOptions(), base).ok());
  auto boundWith = [&](auto edit) {
    calib::CalibrationStats edited = stats;
    edit(edited);
    double bound = 0;
    EXPECT_TRUE(
        certifyHeadByPosition(edited, plan, 1, 1, CertifyOptions(), bound)
            .ok());
    return bound;
  };
  size_t lh = stats.index(1, 1);
  double values = boundWith([&](calib::CalibrationStats &s) {
    for (int j = 0; j < 8; ++j) {
      s.vChanMin[lh * 8 + j] *= 2;
      s.vChanMax[lh * 8 + j] *= 2;
    }
  });
  double queries = boundWith([&](calib::CalibrationStats &s) {
    for (int j = 0; j < 8; ++j)
      s.qAbsMax[lh * 8 + j] *= 2;
  });
  double masses = boundWith([&](calib::CalibrationStats &s) {
    s.attnSinkMass[lh] = s.attnWindowMass[lh] = 1.0f;
  });
  EXPECT_GT(values, base);
  EXPECT_GE(queries, base);
  EXPECT_GE(masses, base);
  std::printf("bound %.4g; values x2 %.4g, |q| x2 %.4g, masses 1 %.4g\n", base,
              values, queries, masses);
}

TEST(ReferenceCertifier, LongCachesCostPerRunAndStayWithinTheKernelModel) {
  // 2^25 positions in blocks of 8: the kernel sums 2^22 + 8 terms, inside
  // its rounding model. Both certifiers visit runs of positions, not
  // positions, and still agree on a uniform body.
  calib::CalibrationStats stats = makeStats(48, 11);
  std::mt19937 rng(5);
  CertifyOptions options;
  options.extrapolation = Extrapolation::WorstCase;
  options.extrapolationMargin = 1.0;
  int64_t capacity = int64_t(1) << 25;
  Plan plan = randomPlan(rng, capacity, 4, 16, false);
  an::StaticCertifiedBound classBound;
  double keyLogitError = 0, reference = 0;
  ASSERT_TRUE(certifyPlanHead(stats, plan, 0, 1, options, classBound,
                              keyLogitError)
                  .ok());
  ASSERT_TRUE(
      certifyHeadByPosition(stats, plan, 0, 1, options, reference).ok());
  EXPECT_GT(reference, 0);
  EXPECT_NEAR(classBound.infNorm, reference, 1e-12 * reference);

  // The closed-form size of a uniform body is the per-block sum.
  Plan perBlock = plan;
  perBlock.perBlock = true;
  perBlock.bodyFormats.clear();
  for (int64_t item = 0; item < plan.getNumItems(); ++item)
    perBlock.bodyFormats.insert(perBlock.bodyFormats.end(),
                                plan.geometry.getNumBodyBlocks(),
                                plan.bodyFormats[item]);
  EXPECT_DOUBLE_EQ(plan.getTotalBytes(), perBlock.getTotalBytes());

  // Eight times longer, the kernel's sums leave the model (n u >= 1/2):
  // both certifiers refuse, neither returns a bound (the factor's NaN once
  // certified 0).
  plan.geometry.capacity = int64_t(1) << 28;
  double bound = -1;
  an::Status status = certifyPlanHead(stats, plan, 0, 1, options, classBound,
                                      keyLogitError);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("past what its rounding model bounds"),
            std::string::npos)
      << status.getMessage();
  status = certifyHeadByPosition(stats, plan, 0, 1, options, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("past what its rounding model bounds"),
            std::string::npos)
      << status.getMessage();

  // exp_ulps so large that exp's relative error reaches 1/2 is refused too.
  plan.geometry.capacity = 48;
  options.kernel.expUlps = int64_t(1) << 23;
  status = certifyHeadByPosition(stats, plan, 0, 1, options, bound);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("exp_ulps"), std::string::npos);
}
