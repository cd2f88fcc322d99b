//===- CalibrationStatsTest.cpp - kvprec-calib-v1 reader and validator ----===//

#include "kvprec/Calibration/CalibrationStats.h"
#include "kvprec/Calibration/Synthetic.h"

#include "TestUtils.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

using namespace llvm;
using namespace kvprec::calib;
using namespace kvprec::calib::test;

namespace {

/// Small valid statistics: L=3, H=2, G=2, D=4, S=2, W=8, B=4, P=21, so
/// NB = 4 and NA = 6.
CalibrationStats makeValidStats() {
  SyntheticOptions options;
  options.layers = 3;
  options.kvHeads = 2;
  options.qHeads = 4;
  options.headDim = 4;
  options.capacity = 21;
  options.block = 4;
  options.sink = 2;
  options.window = 8;
  options.seed = 5;
  Expected<CalibrationStats> stats = generateSyntheticStats(options);
  EXPECT_TRUE(bool(stats)) << errorMessage(stats);
  return std::move(*stats);
}

/// Writes `stats` as-is (no validation) after `edit` adjusts the writer.
std::string
writeUnchecked(const TempDir &dir, const CalibrationStats &stats,
               const std::function<void(SafeTensorsWriter &)> &edit = nullptr) {
  std::string path = dir.path("stats.safetensors");
  SafeTensorsWriter writer;
  addCalibrationTensors(writer, stats);
  if (edit)
    edit(writer);
  EXPECT_EQ(errorMessage(writer.write(path)), "");
  return path;
}

/// Reads `path` and returns the error message ("" on success).
std::string readError(StringRef path) {
  Expected<CalibrationStats> stats = readCalibrationFile(path);
  return errorMessage(stats);
}

#define EXPECT_CONTAINS(haystack, needle)                                      \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)             \
      << "message: \"" << (haystack) << "\"\nexpected: \"" << (needle) << "\""

TEST(CalibrationStatsTest, ShapesFollowMetadata) {
  CalibrationShape shape;
  shape.layers = 3;
  shape.kvHeads = 2;
  shape.qHeads = 4;
  shape.headDim = 4;
  shape.sink = 2;
  shape.window = 8;
  shape.block = 4;
  shape.maxPositions = 21;
  EXPECT_EQ(shape.getQueryHeadsPerKVHead(), 2);
  EXPECT_EQ(shape.getNumBodyBlocks(), 4);     // ceil(13 / 4)
  EXPECT_EQ(shape.getNumAbsoluteBlocks(), 6); // ceil(21 / 4)
  shape.maxPositions = 8;
  EXPECT_EQ(shape.getNumBodyBlocks(), 0);
  EXPECT_EQ(shape.getNumAbsoluteBlocks(), 2);
  EXPECT_EQ(getTensorShape(shape, CalibrationTensorKind::LayerHeadBody),
            (SmallVector<int64_t, 3>{3, 2, 0}));
  shape.querySamples = 5;
  EXPECT_EQ(getTensorShape(shape, CalibrationTensorKind::LayerHeadSampleMass),
            (SmallVector<int64_t, 3>{3, 2, 5, 3}));
  EXPECT_EQ(getCalibrationTensorSpecs().size(), 27u);
}

TEST(CalibrationStatsTest, RoundTrip) {
  TempDir dir;
  CalibrationStats stats = makeValidStats();
  stats.model = "tiny \"model\"";
  stats.prompts = 3;
  stats.steps = 7;
  std::string path = dir.path("stats.safetensors");
  ASSERT_EQ(errorMessage(writeCalibrationFile(stats, path)), "");

  Expected<CalibrationStats> read = readCalibrationFile(path);
  ASSERT_TRUE(bool(read)) << errorMessage(read);
  EXPECT_EQ(read->model, stats.model);
  EXPECT_TRUE(read->synthetic);
  EXPECT_EQ(read->prompts, 3);
  EXPECT_EQ(read->steps, 7);
  EXPECT_EQ(read->shape.layers, 3);
  EXPECT_EQ(read->shape.kvHeads, 2);
  EXPECT_EQ(read->shape.qHeads, 4);
  EXPECT_EQ(read->shape.headDim, 4);
  EXPECT_EQ(read->shape.sink, 2);
  EXPECT_EQ(read->shape.window, 8);
  EXPECT_EQ(read->shape.block, 4);
  EXPECT_EQ(read->shape.maxPositions, 21);
  for (const CalibrationTensorSpec &spec : getCalibrationTensorSpecs()) {
    if (spec.f32Member) {
      const std::vector<float> &a = stats.*spec.f32Member;
      const std::vector<float> &b = read.get().*spec.f32Member;
      ASSERT_EQ(a.size(), b.size()) << spec.name.str();
      // Bitwise (NaN-safe); memcmp of an empty vector's null data is UB.
      EXPECT_TRUE(a.empty() ||
                  std::memcmp(a.data(), b.data(), 4 * a.size()) == 0)
          << spec.name.str();
    } else {
      EXPECT_EQ(stats.*spec.i64Member, read.get().*spec.i64Member)
          << spec.name.str();
    }
  }

  // The metadata is all strings, as the schema says.
  Expected<SafeTensorsFile> file = SafeTensorsFile::open(path);
  ASSERT_TRUE(bool(file));
  EXPECT_EQ(file->getMetadata().at("schema"), "kvprec-calib-v1");
  EXPECT_EQ(file->getMetadata().at("synthetic"), "true");
  EXPECT_EQ(file->getMetadata().at("max_positions"), "21");
  EXPECT_EQ(file->lookup("attn_body_mass")->shape,
            (SmallVector<int64_t, 4>{3, 2, 4}));
  EXPECT_EQ(file->lookup("query_count")->dtype, DType::I64);
  EXPECT_EQ(file->lookup("qk_logit_max")->shape,
            (SmallVector<int64_t, 4>{3, 2}));
  EXPECT_EQ(file->lookup("qk_logit_max")->dtype, DType::F32);
  // The synthetic envelope is a real fraction of its bound.
  for (float value : read->qkLogitMax)
    EXPECT_GT(value, 0.0f);
}

TEST(CalibrationStatsTest, RejectsFileLevelProblems) {
  TempDir dir;
  EXPECT_CONTAINS(readError(dir.path("missing.safetensors")),
                  "missing.safetensors: cannot open file");

  std::string shortPath = dir.path("short.safetensors");
  writeFile(shortPath, "1234");
  EXPECT_CONTAINS(readError(shortPath),
                  "short.safetensors: file is 4 bytes, shorter than the "
                  "8-byte safetensors header length");

  std::string beyondPath = dir.path("beyond.safetensors");
  writeFile(beyondPath, StringRef("\xff\x00\x00\x00\x00\x00\x00\x00{}", 10));
  EXPECT_CONTAINS(readError(beyondPath), "header length 255 exceeds the 2 "
                                         "bytes that follow");

  std::string jsonPath = dir.path("json.safetensors");
  writeFile(jsonPath, StringRef("\x04\x00\x00\x00\x00\x00\x00\x00{{{{", 12));
  EXPECT_CONTAINS(readError(jsonPath), "header is not valid JSON");
}

TEST(CalibrationStatsTest, RejectsMetadataProblems) {
  TempDir dir;
  CalibrationStats stats = makeValidStats();
  struct Case {
    const char *label;
    std::function<void(SafeTensorsWriter &)> edit;
    const char *expected;
  } cases[] = {
      {"no metadata",
       [](SafeTensorsWriter &w) {
         for (StringRef key :
              {"schema", "layers", "kv_heads", "q_heads", "head_dim", "sink",
               "window", "block", "max_positions", "model", "synthetic",
               "prompts", "steps", "softmax_scale", "query_samples"})
           w.removeMetadata(key);
       },
       "missing \"__metadata__\""},
      {"no schema", [](SafeTensorsWriter &w) { w.removeMetadata("schema"); },
       "metadata has no \"schema\" entry"},
      {"schema mismatch",
       [](SafeTensorsWriter &w) { w.setMetadata("schema", "kvprec-calib-v0"); },
       "schema mismatch: metadata \"schema\" is \"kvprec-calib-v0\", "
       "expected \"kvprec-calib-v1\""},
      {"missing key", [](SafeTensorsWriter &w) { w.removeMetadata("window"); },
       "metadata has no \"window\" entry"},
      {"not an integer",
       [](SafeTensorsWriter &w) { w.setMetadata("layers", "three"); },
       "metadata \"layers\" is \"three\", not an integer"},
      {"bad synthetic flag",
       [](SafeTensorsWriter &w) { w.setMetadata("synthetic", "yes"); },
       "metadata \"synthetic\" is \"yes\""},
      {"missing model", [](SafeTensorsWriter &w) { w.removeMetadata("model"); },
       "metadata has no \"model\" entry"},
      {"no softmax scale",
       [](SafeTensorsWriter &w) { w.removeMetadata("softmax_scale"); },
       "metadata has no \"softmax_scale\" entry"},
      {"bad softmax scale",
       [](SafeTensorsWriter &w) { w.setMetadata("softmax_scale", "-1"); },
       "metadata \"softmax_scale\" is \"-1\", not a positive finite "
       "number"},
      {"zero block", [](SafeTensorsWriter &w) { w.setMetadata("block", "0"); },
       "block is 0, must be at least 1"},
      {"heads do not divide",
       [](SafeTensorsWriter &w) { w.setMetadata("q_heads", "5"); },
       "q_heads 5 is not a multiple of kv_heads 2"},
      // Each tensor alone is within 2^30 values; together they are not,
      // and nothing is allocated for them.
      {"statistics too large",
       [](SafeTensorsWriter &w) { w.setMetadata("head_dim", "100000000"); },
       "would take the statistics past 2^30 values (4 GiB)"},
  };
  for (const Case &c : cases)
    EXPECT_CONTAINS(readError(writeUnchecked(dir, stats, c.edit)), c.expected)
        << c.label;
}

TEST(CalibrationStatsTest, RejectsTensorLayoutProblems) {
  TempDir dir;
  CalibrationStats stats = makeValidStats();
  std::vector<int64_t> sinkAsInts(6, 0);
  std::vector<float> bodyTooShort(3 * 2 * 3, 0.0f);
  std::vector<float> countsAsFloats(6, 1.0f);
  struct Case {
    const char *label;
    std::function<void(SafeTensorsWriter &)> edit;
    const char *expected;
  } cases[] = {
      {"missing tensor",
       [](SafeTensorsWriter &w) { w.removeTensor("k_block_chan_span"); },
       "missing required tensor 'k_block_chan_span'"},
      {"wrong dtype",
       [&](SafeTensorsWriter &w) {
         w.addI64("attn_sink_mass", {3, 2}, sinkAsInts);
       },
       "tensor 'attn_sink_mass' has dtype I64, schema kvprec-calib-v1 "
       "requires F32"},
      {"counts as floats",
       [&](SafeTensorsWriter &w) {
         w.addF32("query_count", {3, 2}, countsAsFloats);
       },
       "tensor 'query_count' has dtype F32, schema kvprec-calib-v1 requires "
       "I64"},
      {"body shape",
       [&](SafeTensorsWriter &w) {
         w.addF32("attn_body_mass", {3, 2, 3}, bodyTooShort);
       },
       "tensor 'attn_body_mass' has shape [3, 2, 3], expected [L, H, NB] = "
       "[3, 2, 4]"},
  };
  for (const Case &c : cases)
    EXPECT_CONTAINS(readError(writeUnchecked(dir, stats, c.edit)), c.expected)
        << c.label;
}

TEST(CalibrationStatsTest, RejectsBadValues) {
  TempDir dir;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char *label;
    std::function<void(CalibrationStats &)> edit;
    const char *expected;
  } cases[] = {
      {"NaN", [&](CalibrationStats &s) { s.attnBodyMass[5] = nan; },
       "tensor 'attn_body_mass' element 5 [0, 1, 1] is NaN"},
      {"Inf", [&](CalibrationStats &s) { s.kChanMax[9] = inf; },
       "tensor 'k_chan_max' element 9 [1, 0, 1] is infinite"},
      {"mass above 1", [](CalibrationStats &s) { s.attnSinkMass[3] = 1.01f; },
       "tensor 'attn_sink_mass' element 3 [1, 1] is 1.01, outside the mass "
       "range [0, 1]"},
      {"negative mass",
       [](CalibrationStats &s) { s.attnWindowMassMean[0] = -0.1f; },
       "tensor 'attn_window_mass_mean' element 0 [0, 0] is -0.1"},
      {"negative magnitude", [](CalibrationStats &s) { s.qAbsMax[2] = -1.0f; },
       "tensor 'q_absmax' element 2 [0, 0, 2] is negative"},
      {"negative count", [](CalibrationStats &s) { s.positionCount[1] = -4; },
       "tensor 'position_count' element 1 [1] is negative"},
      {"min above max",
       [](CalibrationStats &s) { s.vChanMin[7] = s.vChanMax[7] + 1.0f; },
       "tensor 'v_chan_min' element 7 [0, 1, 3]"},
      {"mean above max",
       [](CalibrationStats &s) {
         s.attnSinkMassMean[2] = s.attnSinkMass[2] + 0.01f;
       },
       "above the max attn_sink_mass"},
      {"l1 above sum", [](CalibrationStats &s) { s.qL1Max[1] = 1e4f; },
       "tensor 'q_l1_max' element 1 [0, 1] is 10000, above the sum of "
       "q_absmax"},
      {"logit envelope above its bound",
       [](CalibrationStats &s) {
         // Element [1, 0] (flat 2): D = 4 channels.
         double bound = 0.0;
         for (int j = 0; j < 4; ++j)
           bound += s.qAbsMax[2 * 4 + j] *
                    std::max(std::fabs(s.kChanMin[2 * 4 + j]),
                             std::fabs(s.kChanMax[2 * 4 + j]));
         s.qkLogitMax[2] = static_cast<float>(1.01 * bound / 2.0);
       },
       "tensor 'qk_logit_max' element 2 [1, 0] is "},
      {"logit envelope bound message",
       [](CalibrationStats &s) { s.qkLogitMax[0] = 1e4f; },
       "tensor 'qk_logit_max' element 0 [0, 0] is 10000, above "
       "(1/sqrt(head_dim)) * sum_j q_absmax_j * max(|k_chan_min_j|, "
       "|k_chan_max_j|) = "},
      {"negative logit envelope",
       [](CalibrationStats &s) { s.qkLogitMax[5] = -0.5f; },
       "tensor 'qk_logit_max' element 5 [2, 1] is negative (-0.5)"},
      {"block above channel bound",
       [](CalibrationStats &s) { s.kBlockAbsMax[4] = 1e4f; },
       "tensor 'k_block_absmax' element 4 [0, 0, 4] is 10000, above the "
       "largest |k_chan_min|, |k_chan_max|"},
      {"span above twice absmax",
       [](CalibrationStats &s) {
         s.vBlockChanSpan[0] = 2.5f * s.vBlockAbsMax[0];
       },
       "tensor 'v_block_chan_span' element 0 [0, 0, 0]"},
      // Degenerate calibrations: statistics that no attention over observed
      // data can produce.
      {"no queries", [](CalibrationStats &s) { s.queryCount[3] = 0; },
       "tensor 'query_count' element 3 [1, 1] is 0: no query was observed"},
      {"absurd query count",
       [](CalibrationStats &s) {
         s.queryCount[1] = std::numeric_limits<int64_t>::max();
       },
       "tensor 'query_count' element 1 [0, 1] is 9223372036854775807, more "
       "than the observed positions"},
      {"no positions in the first block",
       [](CalibrationStats &s) { s.positionCount[0] = 0; },
       "tensor 'position_count' element 0 [0] is 0: no position of that "
       "block was observed"},
      {"more positions than prompts can give",
       [](CalibrationStats &s) { s.positionCount[1] = 1 << 30; },
       "tensor 'position_count' element 1 [1] is 1073741824, more than "
       "prompts"},
      {"masses below one",
       [](CalibrationStats &s) {
         s.attnSinkMass[2] = s.attnSinkMassMean[2] = 0.0f;
         s.attnWindowMass[2] = s.attnWindowMassMean[2] = 0.0f;
         int64_t blocks = s.shape.getNumBodyBlocks();
         for (int64_t j = 0; j < blocks; ++j)
           s.attnBodyMass[2 * blocks + j] = 0.01f;
       },
       "tensor 'attn_sink_mass' element 2 [1, 0] plus attn_window_mass and "
       "attn_body_mass sum to"},
      {"max weight below uniform",
       [](CalibrationStats &s) { s.attnMaxWeight[0] = 0.0f; },
       "tensor 'attn_max_weight' element 0 [0, 0] is 0, below 1 / "
       "max_positions"},
      {"all zeros",
       [](CalibrationStats &s) {
         for (const CalibrationTensorSpec &spec :
              getCalibrationTensorSpecs()) {
           if (spec.f32Member)
             std::fill((s.*spec.f32Member).begin(),
                       (s.*spec.f32Member).end(), 0.0f);
           else
             std::fill((s.*spec.i64Member).begin(),
                       (s.*spec.i64Member).end(), 0);
         }
       },
       "is 0: no position of that block was observed"},
  };
  for (const Case &c : cases) {
    CalibrationStats stats = makeValidStats();
    c.edit(stats);
    std::string path = writeUnchecked(dir, stats);
    EXPECT_CONTAINS(readError(path), c.expected) << c.label;
    // The same check guards the writer.
    EXPECT_CONTAINS(
        errorMessage(writeCalibrationFile(stats, dir.path("w.safetensors"))),
        c.expected)
        << c.label;
  }
}

TEST(CalibrationStatsTest, LogitEnvelopeBoundIsInclusive) {
  // Exactly at the bound (the all-aligned worst case) is valid, and so is 0.
  CalibrationStats stats = makeValidStats();
  const int64_t D = stats.shape.headDim;
  for (size_t lh = 0; lh < stats.qkLogitMax.size(); ++lh) {
    double bound = 0.0;
    for (int64_t j = 0; j < D; ++j)
      bound += stats.qAbsMax[lh * D + j] *
               std::max(std::fabs(stats.kChanMin[lh * D + j]),
                        std::fabs(stats.kChanMax[lh * D + j]));
    bound /= std::sqrt(static_cast<double>(D));
    // The synthetic value is 20-50 % of its bound.
    EXPECT_GE(stats.qkLogitMax[lh], 0.2 * bound * (1 - 1e-6));
    EXPECT_LE(stats.qkLogitMax[lh], 0.5 * bound * (1 + 1e-6));
    stats.qkLogitMax[lh] = static_cast<float>(bound);
  }
  EXPECT_EQ(errorMessage(validateCalibrationStats(stats, "ctx")), "");
  std::fill(stats.qkLogitMax.begin(), stats.qkLogitMax.end(), 0.0f);
  EXPECT_EQ(errorMessage(validateCalibrationStats(stats, "ctx")), "");
}

/// makeValidStats() with one valid query sample per head: its |q| and
/// logit envelope at their maxima, and its masses filled up to 1 class by
/// class within the class maxima.
CalibrationStats makeStatsWithSamples() {
  CalibrationStats stats = makeValidStats();
  CalibrationShape &shape = stats.shape;
  shape.querySamples = 2;
  int64_t heads = shape.layers * shape.kvHeads, d = shape.headDim,
          bins = shape.getNumSampleMassBins(), blocks = shape.getNumBodyBlocks();
  stats.querySampleCount.assign(heads, 1);
  stats.querySampleMass.assign(heads * 2 * bins, 0.0f);
  stats.querySampleSqMass.assign(heads * 2 * bins, 0.0f);
  stats.querySampleAbsQ.assign(heads * 2 * d, 0.0f);
  stats.querySampleLogit.assign(heads * 2, 0.0f);
  for (int64_t lh = 0; lh < heads; ++lh) {
    size_t sample = lh * 2;
    for (int64_t j = 0; j < d; ++j)
      stats.querySampleAbsQ[sample * d + j] = stats.qAbsMax[lh * d + j];
    stats.querySampleLogit[sample] = stats.qkLogitMax[lh];
    std::vector<float> caps = {stats.attnSinkMass[lh],
                               stats.attnWindowMass[lh]};
    for (int64_t j = 0; j < blocks; ++j)
      caps.push_back(stats.attnBodyMass[lh * blocks + j]);
    float left = 1.0f;
    for (int64_t b = 0; b < bins - 1 && b < int64_t(caps.size()); ++b) {
      float take = std::min(left, caps[b]);
      stats.querySampleMass[sample * bins + b] = take;
      stats.querySampleSqMass[sample * bins + b] = take * take;
      left -= take;
    }
    EXPECT_LE(left, 1e-6f);
  }
  return stats;
}

TEST(CalibrationStatsTest, RejectsQuerySamplesOutsideTheEnvelopes) {
  EXPECT_EQ(errorMessage(validateCalibrationStats(makeStatsWithSamples(),
                                                  "ctx")),
            "");
  struct Case {
    const char *label;
    std::function<void(CalibrationStats &)> edit;
    const char *expected;
  } cases[] = {
      {"more samples than slots",
       [](CalibrationStats &s) { s.querySampleCount[1] = 3; },
       "tensor 'query_sample_count' element 1 [0, 1] is 3, more than "
       "query_samples (2)"},
      {"|q| above q_absmax",
       [](CalibrationStats &s) { s.querySampleAbsQ[3] *= 2.0f; },
       "tensor 'query_sample_absq' element 3 [0, 0, 0, 3] is"},
      {"logit above qk_logit_max",
       [](CalibrationStats &s) { s.querySampleLogit[0] *= 2.0f; },
       "tensor 'query_sample_logit' element 0 [0, 0, 0] is"},
      {"mass above its class maximum",
       [](CalibrationStats &s) {
         s.querySampleMass[0] = s.attnSinkMass[0] + 0.1f;
         s.querySampleMass[1] = 0.0f;
       },
       "tensor 'query_sample_mass' element 0 [0, 0, 0, 0] is"},
      {"masses not summing to one",
       [](CalibrationStats &s) {
         s.querySampleMass[1] = 0.0f;
         s.querySampleSqMass[1] = 0.0f;
       },
       "starts a sample whose masses sum to"},
      {"squared weights above the mass",
       [](CalibrationStats &s) {
         s.querySampleSqMass[0] = s.querySampleMass[0] + 0.01f;
       },
       "tensor 'query_sample_sqmass' element 0 [0, 0, 0, 0] is"},
      {"squares in an unused slot",
       [](CalibrationStats &s) {
         s.querySampleSqMass[s.shape.getNumSampleMassBins()] = 0.01f;
       },
       "belongs to an unused sample slot"},
      {"a used unused slot",
       [](CalibrationStats &s) { s.querySampleLogit[1] = 0.5f; },
       "tensor 'query_sample_logit' element 1 [0, 0, 1] belongs to an unused "
       "sample slot"},
  };
  for (const Case &c : cases) {
    CalibrationStats stats = makeStatsWithSamples();
    c.edit(stats);
    EXPECT_CONTAINS(errorMessage(validateCalibrationStats(stats, "ctx")),
                    c.expected)
        << c.label;
  }
}

TEST(CalibrationStatsTest, ValidatorChecksVectorSizes) {
  CalibrationStats stats = makeValidStats();
  stats.kBlockTokenRange.pop_back();
  EXPECT_CONTAINS(errorMessage(validateCalibrationStats(stats, "ctx")),
                  "ctx: tensor 'k_block_token_range' has 35 values, expected "
                  "36 for shape [L, H, NA] = [3, 2, 6]");
}

} // namespace
