//===- QuantizerTest.cpp - Quantizer emulation and its error bounds -------===//

#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Analysis/SoftFloat.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

struct Config {
  StorageFormat format;
  DequantizerConfig dequantizer;
  std::string name() const {
    return getFormatName(format) +
           "/deq=" + getStorageKindName(dequantizer.precision);
  }
};

/// Every valid (format, dequantizer) combination, Int3 included.
std::vector<Config> allConfigs() {
  std::vector<Config> configs;
  const StorageKind precisions[] = {StorageKind::F32, StorageKind::F16,
                                    StorageKind::BF16};
  for (StorageKind precision : precisions) {
    for (StorageKind kind :
         {StorageKind::F32, StorageKind::F16, StorageKind::BF16}) {
      Config config{StorageFormat::unscaled(kind), {precision}};
      if (verifyDequantizerConfig(config.format, config.dequantizer).ok())
        configs.push_back(config);
    }
    for (StorageKind kind :
         {StorageKind::F8E4M3FN, StorageKind::F8E5M2, StorageKind::Int8,
          StorageKind::Int4, StorageKind::Int3, StorageKind::Int2})
      for (QuantScheme scheme :
           {QuantScheme::Symmetric, QuantScheme::Asymmetric})
        for (StorageKind scaleKind :
             {StorageKind::F32, StorageKind::F16, StorageKind::BF16}) {
          Config config{StorageFormat::scaled(kind, scheme,
                                              Granularity::TokenGroup, 32,
                                              scaleKind),
                        {precision}};
          if (verifyDequantizerConfig(config.format, config.dequantizer).ok())
            configs.push_back(config);
        }
  }
  return configs;
}

/// Random groups of several shapes, including adversarial ones whose values
/// sit exactly on (or one ulp off) the rounding midpoints of `config`.
std::vector<float> makeGroup(Rng &rng, const Config &config, int shape) {
  size_t n = uniformIndex(rng, 1, 96);
  std::vector<float> values(n);
  double magnitude = std::pow(10.0, uniform(rng, -3.0, 3.0));
  switch (shape) {
  case 0: // Normal.
    for (float &v : values)
      v = float(normal(rng, 0.0, magnitude));
    break;
  case 1: { // Offset uniform (asymmetric data).
    double lo = uniform(rng, -1.0, 2.0) * magnitude;
    double hi = lo + uniform(rng, 0.01, 1.0) * magnitude;
    for (float &v : values)
      v = float(uniform(rng, lo, hi));
    break;
  }
  case 2: // Heavy tail: one outlier.
    for (float &v : values)
      v = float(normal(rng, 0.0, magnitude));
    values[uniformIndex(rng, 0, n - 1)] *= 50.0f;
    break;
  case 3: // Constant.
    std::fill(values.begin(), values.end(), float(normal(rng, 0, magnitude)));
    break;
  case 4: // All zero.
    std::fill(values.begin(), values.end(), 0.0f);
    break;
  case 5: // Tiny: scales and values in subnormal ranges.
    for (float &v : values)
      v = float(normal(rng, 0.0, std::pow(10.0, uniform(rng, -40, -6))));
    break;
  default: { // Midpoints of the stored grid, +-1 ulp.
    const StorageFormat &format = config.format;
    double absMax = magnitude;
    values[0] = float(absMax);
    GroupScale scale;
    if (isScaled(format) && format.scheme == QuantScheme::Symmetric)
      (void)computeSymmetricScale(format, double(values[0]), scale);
    else if (isScaled(format))
      (void)computeAsymmetricScale(format, 0.0, double(values[0]), scale);
    for (size_t i = 1; i < n; ++i) {
      double mid;
      if (!isScaled(format) || isFp8Kind(format.kind)) {
        StorageKind kind = format.kind;
        double unit = isScaled(format) ? scale.scale : 1.0;
        double y = uniform(rng, 0.0, absMax) / unit;
        double below = roundDownToFloatKind(kind, y);
        double above = nextUpInKind(kind, below);
        mid = (below + above) / 2 * unit;
      } else {
        auto range = getIntegerCodeRange(format.kind, format.scheme);
        double k = double(uniformIndex(rng, 0, range.second - range.first - 1) +
                          range.first);
        mid = (k + 0.5) * scale.scale + scale.zeroPoint;
      }
      float x = float(mid);
      int nudge = int(uniformIndex(rng, 0, 2)) - 1;
      if (nudge < 0)
        x = std::nextafter(x, -INFINITY);
      else if (nudge > 0)
        x = std::nextafter(x, INFINITY);
      values[i] = std::min(std::max(x, -float(absMax)), float(absMax));
      if (format.scheme == QuantScheme::Asymmetric)
        values[i] = std::max(values[i], 0.0f);
    }
    // The asymmetric grid above assumed min = 0; make it the group minimum.
    if (isScaled(format) && format.scheme == QuantScheme::Asymmetric && n > 1)
      values[n - 1] = 0.0f;
    break;
  }
  }
  return values;
}

TEST(QuantizerTest, SymmetricScaleIsSmallestNonClippingStoredValue) {
  Rng rng(3);
  for (StorageKind kind :
       {StorageKind::Int8, StorageKind::Int4, StorageKind::Int2,
        StorageKind::F8E4M3FN, StorageKind::F8E5M2})
    for (StorageKind scaleKind :
         {StorageKind::F32, StorageKind::F16, StorageKind::BF16}) {
      StorageFormat format = StorageFormat::scaled(
          kind, QuantScheme::Symmetric, Granularity::TokenGroup, 32, scaleKind);
      double maxCode = isFp8Kind(kind)
                           ? getFloatFormatInfo(kind).maxFinite
                           : getIntegerCodeRange(kind, format.scheme).second;
      for (int i = 0; i < 2000; ++i) {
        double absMax = toF32(std::pow(10.0, uniform(rng, -6.0, 4.0)));
        GroupScale scale;
        ASSERT_TRUE(computeSymmetricScale(format, absMax, scale).ok());
        ASSERT_TRUE(isRepresentable(scaleKind, scale.scale));
        ASSERT_GE(scale.scale * maxCode, absMax);
        double smaller = nextDownInKind(scaleKind, scale.scale);
        ASSERT_LT(smaller * maxCode, absMax);
      }
    }
}

TEST(QuantizerTest, AsymmetricZeroPointRoundsDownAndCoversRange) {
  Rng rng(4);
  for (StorageKind scaleKind :
       {StorageKind::F32, StorageKind::F16, StorageKind::BF16}) {
    StorageFormat format =
        StorageFormat::scaled(StorageKind::Int4, QuantScheme::Asymmetric,
                              Granularity::ChannelGroup, 32, scaleKind);
    for (int i = 0; i < 2000; ++i) {
      double lo = toF32(normal(rng, 0.0, 10.0));
      double hi = toF32(lo + std::fabs(normal(rng, 0.0, 10.0)));
      GroupScale scale;
      ASSERT_TRUE(computeAsymmetricScale(format, lo, hi, scale).ok());
      ASSERT_LE(scale.zeroPoint, lo);
      ASSERT_TRUE(isRepresentable(scaleKind, scale.zeroPoint));
      float span = float(hi) - float(scale.zeroPoint);
      ASSERT_GE(scale.scale * 15, double(span));
    }
  }
}

TEST(QuantizerTest, ErrorBoundHoldsForEveryElement) {
  Rng rng(2024);
  std::vector<Config> configs = allConfigs();
  // f32 dequantizer: 3 unscaled + 6 fp8 + 24 int; f16 and bf16: 11 each.
  ASSERT_EQ(configs.size(), 55u);
  std::map<std::string, TightnessTracker> byFamily;
  size_t totalElements = 0, totalViolations = 0;
  for (const Config &config : configs) {
    TightnessTracker tracker;
    for (int trial = 0; trial < 140; ++trial) {
      std::vector<float> values = makeGroup(rng, config, trial % 7);
      QuantizedGroup group;
      Status status = quantizeGroup(config.format, values.data(), values.size(),
                                    config.dequantizer, group);
      ASSERT_TRUE(status.ok()) << config.name() << ": " << status.getMessage();
      for (size_t i = 0; i < values.size(); ++i) {
        double error = std::fabs(double(group.dequantized[i]) - values[i]);
        tracker.record(error, group.errorBounds[i]);
        if (error > group.errorBounds[i])
          ADD_FAILURE() << config.name() << " x=" << values[i]
                        << " x^=" << group.dequantized[i]
                        << " delta=" << group.errorBounds[i];
        // Codes stay in range: nothing clipped.
        if (isIntegerKind(config.format.kind)) {
          auto range =
              getIntegerCodeRange(config.format.kind, config.format.scheme);
          ASSERT_GE(group.codes[i], range.first);
          ASSERT_LE(group.codes[i], range.second);
        }
        // The dequantizer produced a value of its own precision.
        ASSERT_TRUE(isRepresentable(config.dequantizer.precision,
                                    group.dequantized[i]));
      }
    }
    totalElements += tracker.cases;
    totalViolations += tracker.violations;
    std::string family =
        std::string(getStorageKindName(config.format.kind)) +
        (isScaled(config.format)
             ? std::string("/") + getQuantSchemeName(config.format.scheme)
             : std::string()) +
        "/deq=" + getStorageKindName(config.dequantizer.precision);
    TightnessTracker &summary = byFamily[family];
    summary.cases += tracker.cases;
    summary.violations += tracker.violations;
    summary.maxRatio = std::max(summary.maxRatio, tracker.maxRatio);
    summary.sumRatio += tracker.sumRatio;
    summary.numRatios += tracker.numRatios;
  }
  for (auto &[family, tracker] : byFamily)
    tracker.print(("quantizer |x^-x|/delta " + family).c_str());
  std::printf("[tightness] quantizer: %zu elements, %zu violations\n",
              totalElements, totalViolations);
  EXPECT_EQ(totalViolations, 0u);
}

TEST(QuantizerTest, Int8BoundIsTight) {
  // Half a step is reached for uniform data, so the bound is nearly tight.
  Rng rng(8);
  StorageFormat format =
      StorageFormat::scaled(StorageKind::Int8, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 64, StorageKind::F16);
  double maxRatio = 0.0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> values(64);
    for (float &v : values)
      v = float(uniform(rng, -1.0, 1.0));
    QuantizedGroup group;
    ASSERT_TRUE(
        quantizeGroup(format, values.data(), 64, DequantizerConfig(), group)
            .ok());
    for (size_t i = 0; i < 64; ++i)
      maxRatio =
          std::max(maxRatio, std::fabs(group.dequantized[i] - values[i]) /
                                 group.errorBounds[i]);
  }
  EXPECT_GT(maxRatio, 0.99);
  EXPECT_LE(maxRatio, 1.0);
}

TEST(QuantizerTest, Fp16DequantizerTermMatters) {
  // §5: with an fp16 dequantizer at 8 bits the u_deq |x^| term is about 12%
  // of s/2 (u_deq |x^| ~ 2^-11 * 127 s = 0.124 s/2 at the group maximum).
  StorageFormat format =
      StorageFormat::scaled(StorageKind::Int8, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 32, StorageKind::F16);
  std::vector<float> values(32, 0.25f);
  values[0] = 1.0f;
  QuantizedGroup f32Group, f16Group;
  ASSERT_TRUE(
      quantizeGroup(format, values.data(), 32, {StorageKind::F32}, f32Group)
          .ok());
  ASSERT_TRUE(
      quantizeGroup(format, values.data(), 32, {StorageKind::F16}, f16Group)
          .ok());
  double halfStep = f16Group.scale.scale / 2;
  double relativeIncrease = (f16Group.errorBounds[0] - halfStep) / halfStep;
  EXPECT_GT(relativeIncrease, 0.11);
  EXPECT_LT(relativeIncrease, 0.13);
  EXPECT_LT((f32Group.errorBounds[0] - halfStep) / halfStep, 1e-4);
}

#ifdef __FLT16_MAX__
TEST(QuantizerTest, Fp16DequantizerMatchesFloat16Arithmetic) {
  Rng rng(16);
  for (QuantScheme scheme : {QuantScheme::Symmetric, QuantScheme::Asymmetric}) {
    StorageFormat format =
        StorageFormat::scaled(StorageKind::Int4, scheme,
                              Granularity::TokenGroup, 32, StorageKind::F16);
    for (int trial = 0; trial < 500; ++trial) {
      std::vector<float> values(32);
      for (float &v : values)
        v = float(normal(rng, 0.5, std::pow(10.0, uniform(rng, -2, 2))));
      QuantizedGroup group;
      ASSERT_TRUE(
          quantizeGroup(format, values.data(), 32, {StorageKind::F16}, group)
              .ok());
      for (size_t i = 0; i < 32; ++i) {
        _Float16 k = _Float16(group.codes[i]);
        _Float16 s = _Float16(float(group.scale.scale));
        _Float16 expected = k * s;
        if (scheme == QuantScheme::Asymmetric)
          expected = expected + _Float16(float(group.scale.zeroPoint));
        ASSERT_EQ(float(expected), group.dequantized[i]);
      }
    }
  }
}
#endif

TEST(QuantizerTest, FailuresAreReported) {
  QuantizedGroup group;
  float big[] = {1e6f, 1.0f};
  Status status = quantizeGroup(StorageFormat::unscaled(StorageKind::F16), big,
                                2, DequantizerConfig(), group);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("not representable"), std::string::npos);

  StorageFormat fp8F16Scale =
      StorageFormat::scaled(StorageKind::F8E4M3FN, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 2, StorageKind::F16);
  float huge[] = {1e10f, 1.0f};
  status = quantizeGroup(fp8F16Scale, huge, 2, DequantizerConfig(), group);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("overflows"), std::string::npos);

  StorageFormat f32Scale = fp8F16Scale;
  f32Scale.scaleKind = StorageKind::F32;
  float ok[] = {1.0f, 2.0f};
  status = quantizeGroup(f32Scale, ok, 2, {StorageKind::F16}, group);
  ASSERT_TRUE(status.failed());
  EXPECT_NE(status.getMessage().find("exactly"), std::string::npos);

  float nan[] = {NAN, 1.0f};
  EXPECT_TRUE(
      quantizeGroup(f32Scale, nan, 2, DequantizerConfig(), group).failed());

  Matrix notF32(1, 2);
  notF32(0, 0) = 0.1; // Not an f32 value.
  QuantizedMatrix quantized;
  EXPECT_TRUE(quantizeMatrix(f32Scale, notF32, DequantizerConfig(), quantized)
                  .failed());
  Matrix threeChannels(2, 3, 1.0);
  EXPECT_TRUE(
      quantizeMatrix(f32Scale, threeChannels, DequantizerConfig(), quantized)
          .failed());
}

TEST(QuantizerTest, MatrixGroupingFollowsGranularity) {
  Rng rng(11);
  Matrix values = randomCache(rng, 10, 8, 1.0);
  StorageFormat tokenGroups =
      StorageFormat::scaled(StorageKind::Int4, QuantScheme::Symmetric,
                            Granularity::TokenGroup, 4, StorageKind::F16);
  QuantizedMatrix quantized;
  ASSERT_TRUE(
      quantizeMatrix(tokenGroups, values, DequantizerConfig(), quantized).ok());
  EXPECT_EQ(quantized.scales.size(), 10u * 2);
  // Token 3, channel group 1 uses scales[3 * 2 + 1]: its absmax sets it.
  double absMax = 0.0;
  for (size_t j = 4; j < 8; ++j)
    absMax = std::max(absMax, std::fabs(values(3, j)));
  GroupScale expected;
  ASSERT_TRUE(computeSymmetricScale(tokenGroups, absMax, expected).ok());
  EXPECT_EQ(quantized.scales[3 * 2 + 1].scale, expected.scale);

  // Channel groups of 4 tokens over 10 tokens: 3 groups (last partial).
  StorageFormat channelGroups = tokenGroups;
  channelGroups.granularity = Granularity::ChannelGroup;
  ASSERT_TRUE(
      quantizeMatrix(channelGroups, values, DequantizerConfig(), quantized)
          .ok());
  EXPECT_EQ(quantized.scales.size(), 8u * 3);
  absMax = 0.0;
  for (size_t t = 8; t < 10; ++t)
    absMax = std::max(absMax, std::fabs(values(t, 5)));
  ASSERT_TRUE(computeSymmetricScale(channelGroups, absMax, expected).ok());
  EXPECT_EQ(quantized.scales[5 * 3 + 2].scale, expected.scale);
  for (size_t t = 0; t < values.rows; ++t)
    for (size_t j = 0; j < values.cols; ++j)
      EXPECT_LE(std::fabs(quantized.dequantized(t, j) - values(t, j)),
                quantized.errorBounds(t, j));
}

} // namespace
